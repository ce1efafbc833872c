"""corl.training.setup: the rewards section of a recipe becomes each reward's backend options."""

from __future__ import annotations

import pytest
import torch

from corl.config import load_config, resolve_recipe
from corl.training.setup import build_optimizer, reward_options


def test_reward_knobs_reach_the_backends():
    cfg = load_config(resolve_recipe("shapes-tiny/unified"), [
        "rewards.image_similarity=lpips", "rewards.lpips_net=vgg", "rewards.image_similarity_size=224",
        "rewards.cycle_combine=sum", "rewards.tim_scale=raw", "rewards.captioner=blip",
        "rewards.captioner_model=my/blip", "rewards.captioner_max_new_tokens=50",
        "rewards.text_similarity=bertscore", "rewards.text_similarity_model=bert-base-uncased",
        "rewards.text_similarity_layers=12",
    ])
    options = reward_options(cfg, ["cycle", "tim", "accuracy"], torch.device("cpu"))
    cycle = options["cycle"]
    assert cycle["combine"] == "sum" and cycle["visual"] == "lpips"
    assert cycle["visual_options"] == {"net": "vgg", "size": (224, 224)}
    assert cycle["captioner_options"] == {"model": "my/blip", "max_new_tokens": 50}
    assert cycle["text_similarity_options"] == {"model": "bert-base-uncased", "num_layers": 12}
    assert options["tim"] == {"scale": "raw"} and "accuracy" not in options


def test_defaults_keep_the_shapes_recipes_options():
    cfg = load_config(resolve_recipe("shapes-tiny/unified"))
    options = reward_options(cfg, ["cycle", "tim"], torch.device("cpu"))
    assert options["cycle"]["combine"] == "mean" and "visual_options" not in options["cycle"]
    assert options["tim"] == {"scale": "unit"}
    # reward_kwargs still win over the derived options
    cfg = load_config(resolve_recipe("shapes-tiny/unified"), ["rewards.reward_kwargs={cycle: {combine: sum}}"])
    assert reward_options(cfg, ["cycle"], torch.device("cpu"))["cycle"]["combine"] == "sum"


def test_answer_format_reaches_the_policys_prompts(tmp_path):
    from corl.config import DEFAULT_ANSWER_FORMAT
    from corl.policy.prompts import encode_understanding
    from corl.policy.testing import sample_images
    from corl.training.setup import load_trainable_policy
    from corl.training.testing import save_tiny_policy, tiny_config

    model_dir = save_tiny_policy(tmp_path / "model")
    for setting, wanted in (([], DEFAULT_ANSWER_FORMAT), (["rollout.answer_format="], None)):
        cfg = tiny_config(model_dir, "mc", setting)
        policy = load_trainable_policy(cfg, torch.device("cpu"), torch.float32).policy
        assert policy.style.answer_format == wanted
        text = encode_understanding(policy.processor, sample_images(1), ["what color?"], policy.style).texts[0]
        assert ("<think>" in text) == (wanted is not None)


def test_reward_kwargs_must_name_registered_rewards_but_may_serve_other_stages():
    from corl.training.setup import build_rewards

    mc = load_config(resolve_recipe("shapes-tiny/mc"), ["rewards.reward_kwargs={cycle: {combine: sum}}"])
    assert set(build_rewards(mc, None, torch.device("cpu"))) == {"mm2t"}  # cycle is for another stage
    typo = load_config(resolve_recipe("shapes-tiny/mc"), ["rewards.reward_kwargs={cycel: {combine: sum}}"])
    with pytest.raises(ValueError, match=r"unknown reward\(s\) \['cycel'\]"):
        build_rewards(typo, None, torch.device("cpu"))


def test_optimizer_takes_its_settings_from_the_config():
    cfg = load_config(resolve_recipe("shapes-tiny/unified"), ["optim.adam_epsilon=1e-6", "optim.adam_beta2=0.95"])
    group = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))]).param_groups[0]
    assert (group["eps"], group["betas"], group["lr"]) == (1e-6, (0.9, 0.95), cfg.optim.learning_rate)
