"""A Janus-Pro-1B-shaped model (real sizes, random weights, built locally) through every policy path.

Slow: about 2B parameters in float32 on CPU. The image rollout samples only a few of the 576 codes
(`sample_image_codes(num_codes=3)`, padded with code 0) but keeps the real shapes: 576-code images
decoded to 384 px by the real-size VQ decoder, understanding prompts with 576 image placeholders from the 384 px SigLIP-L/16 encoder.
"""

from __future__ import annotations

import time

import pytest
import torch

from corl.generation.rollout import decode_images, rollout_text, sample_image_codes
from corl.policy.architecture import JANUS_PRO_1B, build_janus
from corl.policy.policy import JanusPolicy
from corl.policy.scoring import image_token_logps, text_token_logps
from corl.policy.testing import TINY_WORDS, sample_images
from corl.policy.tokenizer import build_processor, build_tokenizer


@pytest.mark.slow
def test_janus_pro_1b_shaped_rollouts_and_scoring_on_cpu():
    timings = {}
    start = time.perf_counter()
    tokenizer = build_tokenizer(list(TINY_WORDS))
    processor = build_processor(tokenizer, JANUS_PRO_1B.image_size, patch_size=JANUS_PRO_1B.patch_size)
    torch.manual_seed(0)
    policy = JanusPolicy(build_janus(JANUS_PRO_1B, tokenizer), processor)
    timings["build"] = time.perf_counter() - start
    config = policy.model.config
    assert policy.num_image_tokens == 576 and config.vq_config.num_embeddings == 16384
    assert config.text_config.vocab_size == 102400 and config.text_config.num_hidden_layers == 24
    assert config.text_config.hidden_size == 2048 and config.text_config.num_attention_heads == 16
    assert config.vision_config.image_size == 384 and config.vision_config.patch_size == 16

    start = time.perf_counter()
    prompt_ids, prompt_mask, codes = sample_image_codes(
        policy, ["a red circle left of a blue square"], num_codes=3, cfg_weight=5.0, seed=0
    )
    image_tokens = torch.cat([codes, codes.new_zeros(1, policy.num_image_tokens - 3)], dim=1)  # [1, 576]
    decoded = decode_images(policy, image_tokens)
    timings["image rollout (3 steps + decode)"] = time.perf_counter() - start
    assert tuple(codes.shape) == (1, 3) and tuple(image_tokens.shape) == (1, 576)
    assert len(decoded) == 1 and decoded[0].size == (384, 384)

    start = time.perf_counter()
    text = rollout_text(policy, sample_images(1), ["what color is the circle?"], max_new_tokens=2, seed=0)
    timings["text rollout (2 tokens)"] = time.perf_counter() - start
    assert text.prompt_ids.shape[1] > 576 and tuple(text.pixel_values.shape) == (1, 3, 384, 384)
    assert text.completion_ids.shape[1] <= 2

    start = time.perf_counter()
    image_logps = image_token_logps(policy, prompt_ids, prompt_mask, image_tokens, 5.0)
    timings["image scoring (CFG, with grad)"] = time.perf_counter() - start
    assert tuple(image_logps.shape) == (1, 576) and image_logps.requires_grad
    assert bool(torch.isfinite(image_logps).all())
    del image_logps

    start = time.perf_counter()
    with torch.no_grad():
        text_logps = text_token_logps(policy,
            text.prompt_ids, text.prompt_mask, text.pixel_values, text.completion_ids, text.completion_mask
        )
    timings["text scoring"] = time.perf_counter() - start
    assert text_logps.shape == text.completion_ids.shape and bool(torch.isfinite(text_logps).all())
    print("\n" + "\n".join(f"{name}: {seconds:.1f}s" for name, seconds in timings.items()))
