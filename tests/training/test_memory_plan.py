"""The memory plan: parameter counts from the meta device equal the real model's, and each knob moves the
component it should (sharding, LoRA, the reference model, checkpointing, the update chunk)."""

from __future__ import annotations

import pytest

from corl.config import load_config, resolve_recipe
from corl.policy.loading import load_model_config
from corl.policy.policy import PARAMETER_GROUPS
from corl.policy.testing import tiny_janus
from corl.training.memory_plan import (
    GiB,
    Devices,
    lora_params,
    model_shape,
    packed_groups,
    plan_memory,
    reward_models,
)


def janus_1b_plan(*overrides: str, devices: Devices = Devices("cuda", 8, 80 * GiB)):
    cfg = load_config(resolve_recipe("janus-pro-1b/paper/unified"), list(overrides))
    return cfg, plan_memory(cfg, SHAPE_1B, devices)


SHAPE_1B = model_shape(load_model_config("deepseek-community/Janus-Pro-1B"))


def test_meta_device_counts_equal_the_built_model():
    model, _ = tiny_janus(0)
    shape = model_shape(model.config)
    for group, paths in PARAMETER_GROUPS.items():
        real = sum(p.numel() for path in paths for p in model.get_submodule(path).parameters())
        assert shape.groups[group] == real, group
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    assert shape.layer_params == sum(p.numel() for p in model.model.language_model.layers[0].parameters())


def test_published_1b_sizes():
    assert (SHAPE_1B.hidden, SHAPE_1B.intermediate, SHAPE_1B.layers, SHAPE_1B.vocab) == (2048, 5632, 24, 102400)
    assert SHAPE_1B.image_tokens == 576 and SHAPE_1B.image_vocab == 16384
    assert 2.0e9 < SHAPE_1B.total_params < 2.2e9  # Janus-Pro-1B: about 2.1B parameters in all


def test_fsdp2_shards_weights_gradients_and_optimizer_states():
    _, ddp = janus_1b_plan()
    _, fsdp = janus_1b_plan("train.sharding=fsdp2")
    for name in ("weights", "gradients", "optimizer states"):
        assert fsdp.components[name][0] == pytest.approx(ddp.components[name][0] / 8, rel=1e-6), name
    assert fsdp.components["gathered weights"][0] == SHAPE_1B.total_params * 2  # bf16 for rollouts
    assert fsdp.total < ddp.total


def test_reference_lora_checkpointing_and_update_chunks():
    _, base = janus_1b_plan()
    _, kl = janus_1b_plan("grpo.beta=0.02")
    assert base.components["reference model"][0] == 0
    assert kl.components["reference model"][0] == base.components["weights"][0]
    cfg, lora = janus_1b_plan("model.lora_r=16")
    assert lora.components["gradients"][0] == lora_params(cfg, SHAPE_1B) * 4
    assert lora_params(cfg, SHAPE_1B) == 24 * 16 * 4 * (2048 + 2048)  # q, k, v, o of 24 layers
    _, eager = janus_1b_plan("model.gradient_checkpointing=false")
    assert eager.components["update activations"][0] > 4 * base.components["update activations"][0]
    _, chunked = janus_1b_plan("train.update_batch_size=4")
    assert chunked.update_rows == 4 and chunked.phases["update"] < base.phases["update"]
    assert chunked.components["rollout KV cache"] == base.components["rollout KV cache"]


def test_largest_update_chunk_is_the_boundary_of_the_budget():
    budget_gib = 40
    cfg, plan = janus_1b_plan(devices=Devices("cuda", 8, budget_gib * GiB))
    largest = plan.largest_update_rows
    assert 0 < largest < 16 and not plan.fits
    at = plan_memory(load_config(resolve_recipe("janus-pro-1b/paper/unified"), [f"train.update_batch_size={largest}"]),
                     SHAPE_1B, Devices("cuda", 8, budget_gib * GiB))
    over = plan_memory(load_config(resolve_recipe("janus-pro-1b/paper/unified"), [f"train.update_batch_size={largest + 1}"]),
                       SHAPE_1B, Devices("cuda", 8, budget_gib * GiB))
    budget = Devices("cuda", 8, budget_gib * GiB).budget
    assert at.phases["update"] <= budget < over.phases["update"]


def test_kv_cache_follows_the_compute_dtype():
    _, bf16 = janus_1b_plan()
    _, fp32 = janus_1b_plan("train.precision=fp32")
    assert fp32.components["rollout KV cache"][0] == 2 * bf16.components["rollout KV cache"][0]


def test_reward_models_of_the_recipes():
    cfg = load_config(resolve_recipe("janus-pro-1b/paper/unified"))
    assert set(reward_models(cfg, lambda path: None)) == {
        "Salesforce/blip-image-captioning-base", "bert-base-uncased", "lpips:vgg"}
    assert reward_models(load_config(resolve_recipe("janus-pro-1b/paper/mc")), lambda path: None) == {}
    # the Shapes recipes' rewards load no model (Shapes captioner, SSIM)
    assert reward_models(load_config(resolve_recipe("shapes-tiny/unified")), lambda path: None) == {}
    bert = load_config(resolve_recipe("shapes-tiny/unified"),
                       ["rewards.captioner=self", "rewards.text_similarity=bertscore"])
    assert reward_models(bert, lambda path: None) == {"minilm": 22_700_000}


def test_unknown_reward_model_is_named_in_a_note():
    cfg = load_config(resolve_recipe("janus-pro-1b/paper/unified"), ["rewards.captioner_model=my/blip"])
    plan = plan_memory(cfg, SHAPE_1B, Devices("cuda", 8, 80 * GiB), reward_models(cfg, lambda path: None))
    assert any("my/blip" in note for note in plan.notes)


def test_rollout_chunks_bound_the_kv_cache():
    _, whole = janus_1b_plan()
    _, chunked = janus_1b_plan("rollout.max_rows=4")
    assert chunked.components["rollout KV cache"][0] < whole.components["rollout KV cache"][0] / 3


def test_self_captioner_rollout_is_counted():
    _, blip = janus_1b_plan()
    _, self_captioned = janus_1b_plan("rewards.captioner=self")
    assert "self-caption" in self_captioned.components["rollout KV cache"][1]
    assert "self-caption" not in blip.components["rollout KV cache"][1]


def test_shared_prompt_scoring_counts_each_prompt_once_and_its_masks():
    cfg, packed = janus_1b_plan()
    _, plain = janus_1b_plan("train.share_prompts=false")
    assert cfg.train.share_prompts  # the default
    r, b = cfg.rollout, cfg.train.per_device_batch_size
    rows = b * r.num_generations
    length = r.max_prompt_length + r.num_generations * r.max_completion_length  # [prompt | G answers]
    assert f"mm2t {b * length} tokens packed + masks " in packed.components["update activations"][1]
    assert f"mm2t {rows * (r.max_prompt_length + r.max_completion_length)} tokens (" in (
        plain.components["update activations"][1])
    masks = b * length**2 * (1 + 2)  # bool + a bf16 bias per group
    assert f"masks {masks / GiB:.2f} GiB" in packed.components["update activations"][1]
    assert "masks" not in plain.components["update activations"][1]
    # fewer tokens kept through the checkpointed layers: the plan drops by what they held, less the masks
    shape = SHAPE_1B
    fewer = (rows * (r.max_prompt_length + r.max_completion_length) - b * length) * shape.layers * shape.hidden * 4
    saved = plain.components["update activations"][0] - packed.components["update activations"][0]
    assert fewer > masks and saved == fewer - masks + heads_difference(cfg, b * length, rows)


def heads_difference(cfg, packed_tokens: int, rows: int) -> int:
    """The text head's share of the plan (capped logits, plus 8 bytes a token of hidden state) for the plain
    minus the packed token count."""
    from corl.training.memory_plan import LOGITS_COPIES, MiB

    r, shape, cap = cfg.rollout, SHAPE_1B, cfg.train.logits_chunk_mb * MiB
    plain_tokens = rows * (r.max_prompt_length + r.max_completion_length)

    def heads(tokens: int) -> int:
        return min(cap, tokens * shape.vocab * 4) * LOGITS_COPIES + tokens * shape.hidden * 8

    return heads(plain_tokens) - heads(packed_tokens)


@pytest.mark.parametrize(("rows", "group", "groups"), [(16, 8, 2), (8, 8, 1), (4, 8, 1), (13, 8, 3), (9, 8, 2),
                                                        (1, 8, 1), (3, 2, 2)])
def test_packed_groups_of_an_update_chunk(rows, group, groups):
    assert packed_groups(rows, group) == groups
