"""Bad recipes and overrides: refused while the config is built, before any model or data loads, in one
line naming the file or the key. `corl train` is run as a user runs it; its output folder must not be
made (nothing was started)."""

from __future__ import annotations

import pytest

RECIPE = "shapes-tiny/unified"

# (override, what the error names)
BAD_OVERRIDES = [
    ("noequals", "noequals"),
    ("grpo.betta=1", "grpo.betta"),
    ("nosection.key=1", "nosection"),
    ("train.max_steps=abc", "train.max_steps"),
    ("train.max_steps=-3", "train.max_steps"),
    ("train.save_steps=-1", "train.save_steps"),
    ("train.per_device_batch_size=0", "train.per_device_batch_size"),
    ("train.sharding=bogus", "train.sharding"),
    ("train.precision=fp8", "train.precision"),
    ("optim.learning_rate=-1e-3", "optim.learning_rate"),
    ("optim.learning_rate=.nan", "optim.learning_rate"),
    ("optim.learning_rate=.inf", "optim.learning_rate"),
    ("optim.adam_beta1=1.5", "optim.adam_beta1"),
    ("grpo.epsilon=-0.2", "grpo.epsilon"),
    ("grpo.beta=-1", "grpo.beta"),
    ("grpo.unified_lambda=.nan", "grpo.unified_lambda"),
    ("rewards.t2i_reward_weights=[.nan,1.0]", "rewards.t2i_reward_weights"),
    ("rewards.t2i_reward_weights=[.inf,1.0]", "rewards.t2i_reward_weights"),
    ("rewards.t2i_reward_weights=[1.0]", "rewards.t2i_reward_funcs"),
    ("rewards.mm2t_reward_funcs=[frobnicate]", "rewards.mm2t_reward_weights"),
    ("rollout.num_generations=1", "rollout.num_generations"),
    ("rollout.num_generations=0", "rollout.num_generations"),
    ("rollout.temperature=0", "rollout.temperature"),
    ("rollout.top_p=1.5", "rollout.top_p"),
    ("rollout.max_prompt_length=0", "rollout.max_prompt_length"),
    ("model.dtype=fp8", "model.dtype"),
    ("stage=bogus", "stage"),
    ("data.source=", "data.source"),
    ("a=[1,", "a=[1,"),
    ("train.max_steps=[1,2]", "train.max_steps"),
]


@pytest.mark.parametrize(("override", "names"), BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_bad_override_is_refused_before_anything_loads(fuzz, override, names):
    fuzz.error("train", RECIPE, "--out", "run", override, names=names)
    assert not (fuzz.tmp / "run").exists()


GOOD = "stage: t2i\ntrain:\n  max_steps: 1\n"
BAD_RECIPES = [
    ("broken.yaml", "stage: t2i\ntrain: [max_steps: 1\n", "not valid YAML"),
    ("list.yaml", "- stage\n- t2i\n", "YAML mapping"),
    ("unknown.yaml", "stage: t2i\ngrpo:\n  betta: 1\n", "grpo.betta"),
    ("range.yaml", "stage: t2i\ntrain:\n  max_steps: -3\n", "range.yaml"),
    ("weights.yaml", "stage: t2i\nrewards:\n  t2i_reward_weights: [.nan, 1.0]\n", "weights.yaml"),
    ("orphan.yaml", "inherit: missing-parent.yaml\nstage: t2i\n", "missing-parent.yaml"),
    ("loop.yaml", "inherit: loop.yaml\nstage: t2i\n", "loops"),
    ("latin1.yaml", "stage: t2i\n# caf\xe9\n".encode("latin-1"), "latin1.yaml"),
    ("tabs.yaml", "stage: t2i\ntrain:\n\tmax_steps: 1\n", "tabs.yaml"),
    ("scalar_section.yaml", "stage: t2i\ntrain: 5\n", "train"),
]


@pytest.mark.parametrize(("name", "text", "names"), BAD_RECIPES, ids=[n for n, _, _ in BAD_RECIPES])
def test_bad_recipe_file_is_named(fuzz, name, text, names):
    recipe = fuzz.write(name, text)
    fuzz.error("train", recipe, "--out", "run", names=names)
    assert not (fuzz.tmp / "run").exists()


def test_a_missing_recipe_file_is_named(fuzz):
    fuzz.error("train", "nowhere/recipe.yaml", "--out", "run", names="nowhere/recipe")


def test_empty_recipe_is_the_defaults(fuzz):
    """An empty file is a recipe with no settings: `corl config show` prints the defaults."""
    recipe = fuzz.write("empty.yaml", "")
    result = fuzz.ok("config", "show", recipe)
    assert "stage: unified" in result.out


def test_recipe_value_overridden_on_the_command_line_is_not_blamed_on_the_file(fuzz):
    recipe = fuzz.write("ok.yaml", GOOD)
    result = fuzz.error("config", "show", recipe, "train.max_steps=-1", names="train.max_steps")
    assert "ok.yaml" not in result.error_lines[0]
