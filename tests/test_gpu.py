"""The CUDA paths the CPU suite cannot reach, on a tiny random Janus: marked `gpu`, so outside the default run;
`make test-gpu` runs them on a machine with a GPU and skips them without one.

- compiled decoding (`rollout.compile_decode`: torch.compile with CUDA graphs on a GPU) draws the eager loop's
  greedy image codes and answers;
- shared-prompt scoring (`train.share_prompts`) equals row-by-row scoring with the GPU's attention kernels,
  in float32 and under bf16 autocast (the recipes' mixed precision);
- a unified and an oe step of the trainer run on the GPU in mixed precision and train the decoder.

CORL_GPU_TESTS_DEVICE=cpu runs the same tests on CPU: a check of the tests themselves, where the compiler is
AOTInductor instead of CUDA graphs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corl.generation.rollout import rollout_images, rollout_text
from corl.policy.policy import JanusPolicy
from corl.policy.scoring import text_token_logps
from corl.policy.shared_prompts import PACKABLE_ATTENTION
from corl.policy.testing import sample_images, tiny_janus
from corl.rewards import register_function, reward_names, unregister
from corl.trainer import train
from corl.training.testing import FROZEN_PREFIXES, answer_length, save_tiny_policy, tiny_config

DEVICE = torch.device(os.environ.get("CORL_GPU_TESTS_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CAPTIONS = ["a red circle", "two blue squares left of a green triangle"]
QUESTIONS = ["what color?", "how many circles are there left of the square ?"]  # different lengths: padding


def policy_on_device(dtype: torch.dtype, seed: int = 0) -> JanusPolicy:
    model, processor = tiny_janus(seed, dtype=dtype)
    return JanusPolicy(model.to(DEVICE), processor)


def test_compiled_decoding_draws_the_eager_tokens():
    """float64, so that the compiled kernels' rounding cannot flip a greedy choice."""
    policy = policy_on_device(torch.float64)
    eager = rollout_images(policy, CAPTIONS, group_size=2, greedy=True, decode=False).image_tokens
    compiled = rollout_images(policy, CAPTIONS, group_size=2, greedy=True, decode=False, compile_decode=True)
    assert compiled.image_tokens.device.type == DEVICE.type
    assert torch.equal(compiled.image_tokens, eager)
    images = sample_images(2)
    eager_text = rollout_text(policy, images, QUESTIONS, greedy=True, max_new_tokens=6).completion_ids
    compiled_text = rollout_text(policy, images, QUESTIONS, greedy=True, max_new_tokens=6, compile_decode=True)
    assert torch.equal(compiled_text.completion_ids, eager_text)
    assert len(policy.static_decoders) == 2  # one compiled step for images, one for answers
    policy.static_decoders.clear()


# bf16 logits carry ~2^-8 relative rounding, ~0.02 on log-probs of magnitude 5 whose matmuls differ in shape
# between the two ways (2.7e-3 measured on CPU); a wrong mask or position moves them by order 1
@pytest.mark.parametrize(("autocast", "tolerance"), [(False, 1e-4), (True, 5e-2)])
def test_shared_prompt_scoring_equals_row_by_row(autocast, tolerance):
    """A group's answers scored behind one copy of its prompt (packed, block mask) against one row each."""
    policy = policy_on_device(torch.float32)
    assert policy.model.model.language_model.config._attn_implementation in PACKABLE_ATTENTION  # packs, no fallback
    rollout = rollout_text(policy, sample_images(2), QUESTIONS, group_size=3, max_new_tokens=6, seed=0)
    mask = rollout.completion_mask.clone()
    mask[1, 2:] = 0  # answers of one group end at different lengths
    args = (policy, rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values, rollout.completion_ids, mask)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
        plain = text_token_logps(*args)
        packed = text_token_logps(*args, share_prompts=True)
    assert packed.device.type == DEVICE.type and bool(torch.isfinite(packed).all())
    torch.testing.assert_close(packed * mask, plain * mask, atol=tolerance, rtol=0)


@pytest.fixture
def answer_length_reward():
    name = "gpu_test_answer_length"
    if name not in reward_names():
        register_function(name, answer_length)
    yield name
    unregister(name)


@pytest.mark.parametrize("stage", ["unified", "oe"])
def test_a_step_trains_on_the_device_in_mixed_precision(tmp_path, monkeypatch, answer_length_reward, stage):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    model_dir = save_tiny_policy(tmp_path / "model")
    cfg = tiny_config(model_dir, stage, [f"model.device={DEVICE.type}", "train.precision=bf16",
                                         f"rewards.mm2t_reward_funcs=[{answer_length_reward}]",
                                         "rewards.mm2t_reward_weights=[1.0]"])
    result = train(cfg, tmp_path / "run")
    assert result.steps == 1
    before = load_file(str(Path(model_dir) / "model.safetensors"))
    after = load_file(str(result.final_checkpoint / "model.safetensors"))
    changed = {name for name, weight in after.items() if not torch.equal(weight, before[name])}
    assert any(name.startswith("model.language_model.layers.") for name in changed)
    assert not {name for name in changed if name.startswith(FROZEN_PREFIXES)}  # the recipes' frozen modules
    assert all(bool(torch.isfinite(weight).all()) for weight in after.values())
