import re
from dataclasses import replace
from pathlib import Path

import pytest

from corl.config import CorlConfig, apply_overrides, describe_fields, load_config, recipes_dir, resolve_recipe

SHIPPED = sorted(p for p in recipes_dir().rglob("*.yaml")
                 if p.parent.name not in ("accelerate", "benchmarks") and p.name != "lora.yaml")  # overlays


def test_recipes_are_shipped_for_every_model_family_and_stage():
    names = {str(p.relative_to(recipes_dir())) for p in SHIPPED}
    for model in ("shapes-tiny", "janus-pro-1b/paper", "janus-pro-1b/official", "janus-pro-7b/paper",
                  "janus-pro-7b/official"):
        for stage in ("unified", "t2i", "mc", "oe"):
            assert f"{model}/{stage}.yaml" in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(recipes_dir())))
def test_every_shipped_recipe_loads(path: Path):
    cfg = load_config(path)
    assert isinstance(cfg, CorlConfig)
    if path.name != "common.yaml":
        assert cfg.stage == path.stem


def test_paper_hyperparameters_in_janus_pro_1b_recipes():
    uni = load_config(recipes_dir() / "janus-pro-1b/paper/unified.yaml")
    assert (uni.rollout.num_generations, uni.grpo.beta, uni.optim.learning_rate) == (8, 0.0, 4e-6)
    assert uni.grpo.unified_lambda == 0.8 and uni.rollout.cfg_weight == 5.0
    assert uni.train.per_device_batch_size * 8 == 16  # global batch on 8 GPUs
    for stage, global_batch in (("t2i", 16), ("mc", 32), ("oe", 32)):
        cfg = load_config(recipes_dir() / f"janus-pro-1b/paper/{stage}.yaml")
        assert (cfg.rollout.num_generations, cfg.grpo.beta, cfg.optim.learning_rate) == (16, 0.02, 1e-6)
        assert cfg.train.per_device_batch_size * 8 == global_batch
    seven = load_config(recipes_dir() / "janus-pro-7b/paper/unified.yaml")
    assert seven.model.lora_r > 0 and "7B" in seven.model.name_or_path
    assert seven.rollout.num_generations == 8 and seven.grpo.unified_lambda == 0.8  # the 1B stage settings
    r = uni.rewards  # Eq. 3 sums the halves of R_cycle; R_TIM is the cosine score itself
    assert (r.cycle_combine, r.tim_scale, r.t2i_reward_funcs) == ("sum", "raw", ["cycle", "tim"])
    # the update of a 576-token image per row does not fit a GPU without recomputing activations
    assert uni.model.gradient_checkpointing and seven.model.gradient_checkpointing


def test_official_family_is_the_paper_stage_with_the_official_codes_settings():
    """scripts/corl_unified.sh: 8 GPUs x 1 prompt x 4 accumulation, completions of 576, pure bf16, the
    question verbatim, conditional image log-probs, its own accuracy; the rest as the paper family."""
    paper = load_config(recipes_dir() / "janus-pro-1b/paper/unified.yaml")
    official = load_config(recipes_dir() / "janus-pro-1b/official/unified.yaml")
    assert official.train.per_device_batch_size * official.optim.gradient_accumulation_steps * 8 == 32
    assert official.rollout.max_completion_length == 576 and paper.rollout.max_completion_length == 512
    assert (official.model.dtype, official.rollout.image_logps, official.rollout.answer_format) == ("bf16", "cond", "")
    assert official.rewards.mm2t_reward_funcs == ["accuracy_upstream", "format"]
    assert paper.rewards.mm2t_reward_funcs == ["accuracy", "format"]
    assert (official.optim.adam_beta2, official.optim.lr_scheduler) == (0.999, "linear")
    assert official.rewards == replace(paper.rewards, mm2t_reward_funcs=["accuracy_upstream", "format"])
    mc = load_config(recipes_dir() / "janus-pro-1b/official/mc.yaml")
    assert (mc.stage, mc.rollout.num_generations, mc.grpo.beta, mc.model.dtype) == ("mc", 16, 0.02, "bf16")


def test_several_parents_merge_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 1\ngrpo:\n  beta: 0.5\n  epsilon: 0.3\n")
    (tmp_path / "b.yaml").write_text("seed: 2\ngrpo:\n  beta: 0.1\n")
    (tmp_path / "c.yaml").write_text("inherit: [a.yaml, b.yaml]\ngrpo:\n  epsilon: 0.25\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert (cfg.seed, cfg.grpo.beta, cfg.grpo.epsilon) == (2, 0.1, 0.25)


def test_unknown_key_lists_valid_ones(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo:\n  betta: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown config key 'grpo.betta'.*grpo.beta"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"unknown config key 'trian'.*valid keys: stage"):
        load_config(None, ["trian.max_steps=3"])


def test_overrides_and_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\ngrpo:\n  beta: 0.5\n  epsilon: 0.3\n")
    (tmp_path / "child.yaml").write_text("inherit: base.yaml\ngrpo:\n  beta: 0.1\n")
    cfg = load_config(tmp_path / "child.yaml", ["optim.learning_rate=1e-5", "rewards.t2i_reward_funcs=cycle",
                                                 "rewards.t2i_reward_weights=[2.0]"])
    assert cfg.seed == 3 and cfg.grpo.beta == 0.1 and cfg.grpo.epsilon == 0.3
    assert cfg.optim.learning_rate == 1e-5
    assert cfg.rewards.t2i_reward_funcs == ["cycle"] and cfg.rewards.t2i_reward_weights == [2.0]


def test_type_choice_and_cross_field_errors():
    with pytest.raises(ValueError, match="expected an integer"):
        load_config(None, ["rollout.num_generations=2.5"])
    with pytest.raises(ValueError, match="loss_type='grp' is not one of"):
        load_config(None, ["grpo.loss_type=grp"])
    with pytest.raises(ValueError, match="t2i_reward_weights has 1"):
        load_config(None, ["rewards.t2i_reward_weights=[1.0]"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["grpo.beta"])


def test_every_field_has_help():
    rows = describe_fields()
    assert len(rows) > 40
    assert all(help_text.strip() for _, help_text, _ in rows)


def test_resolve_recipe_by_name_and_error():
    assert resolve_recipe("shapes-tiny/unified").name == "unified.yaml"
    with pytest.raises(FileNotFoundError, match="shipped recipes: .*janus-pro-1b/paper/mc"):
        resolve_recipe("nope/none")


def test_cli_config_show(capsys):
    from corl.cli import main

    assert main(["config", "show", "janus-pro-1b/paper/t2i", "grpo.beta=0.04"]) == 0
    out = capsys.readouterr().out
    assert "beta: 0.04" in out and "Janus-Pro-1B" in out
    assert main(["config", "show", "shapes-tiny/mc", "grpo.nope=1"]) == 2


@pytest.mark.parametrize("override, message", [
    ("optim.learning_rate=-1e-3", "optim.learning_rate=-0.001 must be > 0"),
    ("optim.learning_rate=.nan", "optim.learning_rate=nan must be > 0"),
    ("grpo.epsilon=-0.2", "grpo.epsilon=-0.2 must be > 0"),
    ("train.max_steps=-3", "train.max_steps=-3 must be >= 0"),
    ("train.save_steps=-1", "train.save_steps=-1 must be >= 0"),
    ("rollout.temperature=0", "rollout.temperature=0.0 must be > 0"),
    ("rollout.top_p=1.5", "rollout.top_p=1.5 must be in (0, 1]"),
    ("optim.adam_beta2=1.0", "optim.adam_beta2=1.0 must be in [0, 1)"),
    ("optim.adam_epsilon=0", "optim.adam_epsilon=0.0 must be positive"),
    ("rewards.t2i_reward_weights=[.nan,1.0]", "every weight must be a finite number"),
    ("rewards.mm2t_reward_weights=[.inf,1.0]", "every weight must be a finite number"),
])
def test_out_of_range_values_are_refused_when_the_config_is_built(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_config(resolve_recipe("shapes-tiny/unified"), [override])


def test_broken_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("grpo:\n  beta: [0.1\n")
    with pytest.raises(ValueError, match=r"broken.yaml: not valid YAML \(line \d+, column \d+\)"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"override 'grpo.beta=\[0.1': the value is not valid YAML"):
        load_config(None, ["grpo.beta=[0.1"])
