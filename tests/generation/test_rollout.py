from __future__ import annotations

import pytest
import torch

from corl.generation.rollout import decode_images, rollout_images, rollout_text, sample_image_codes
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import encode_generation, encode_understanding
from corl.policy.scoring import text_token_logps
from corl.policy.testing import sample_images, tiny_janus

CAPTIONS = ["a red circle", "a blue square"]  # same token length: no padding, comparable with generate


def _generated_codes(policy: JanusPolicy, weight: float, *, do_sample: bool) -> torch.Tensor:
    """transformers' own image generation for CAPTIONS (unpadded prompts) -> [2, N] codes."""
    encoded = encode_generation(policy.processor, CAPTIONS)
    assert bool(encoded.attention_mask.all())
    return policy.model.generate(
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        generation_mode="image",
        do_sample=do_sample,
        guidance_scale=weight,
    )


def test_greedy_cfg_image_rollout_matches_transformers_generate(tiny_policy):
    for weight in (5.0, 2.5):
        reference = _generated_codes(tiny_policy, weight, do_sample=False)
        ours = rollout_images(tiny_policy, CAPTIONS, cfg_weight=weight, greedy=True, decode=False)
        assert torch.equal(ours.image_tokens, reference), weight
        assert len(set(reference[0].tolist())) > 3  # a non-degenerate sequence was compared


def test_sampled_cfg_image_rollout_matches_transformers_generate(tiny_policy):
    """Sampling too: transformers' generate draws with torch.multinomial from the global generator; ours
    draws the same codes from a generator with the same seed (the noise form of multinomial, run inside
    the decode step)."""
    for seed, weight in ((7, 5.0), (8, 2.5)):
        torch.manual_seed(seed)
        reference = _generated_codes(tiny_policy, weight, do_sample=True)
        ours = rollout_images(tiny_policy, CAPTIONS, cfg_weight=weight, seed=seed, decode=False)
        assert torch.equal(ours.image_tokens, reference), (seed, weight)


def test_image_rollout_raises_on_non_finite_logits():
    model, processor = tiny_janus(0)
    with torch.no_grad():
        model.model.generation_head.vision_head.weight[3, 0] = float("nan")
    policy = JanusPolicy(model, processor)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        rollout_images(policy, CAPTIONS, seed=0, decode=False)


def test_image_rollout_record_shapes_and_exact_token_count(tiny_policy):
    result = rollout_images(tiny_policy,
        ["a red circle", "two green triangles above a yellow square"], group_size=3, seed=0
    )
    rows, n = 6, tiny_policy.num_image_tokens
    assert tuple(result.image_tokens.shape) == (rows, n)  # every one of the N codes sampled
    assert result.prompt_ids.shape[0] == rows and result.prompt_mask.shape == result.prompt_ids.shape
    assert result.captions == ["a red circle"] * 3 + ["two green triangles above a yellow square"] * 3
    assert len(result.images) == rows and result.images[0].size == (32, 32) and result.images[0].mode == "RGB"
    assert int(result.image_tokens.max()) < tiny_policy.model.config.vq_config.num_embeddings
    assert int(result.image_tokens.min()) >= 0
    assert result.num_prompts == 2 and result.cfg_weight == 5.0
    # rows of one prompt share its prompt; sampled images differ within a group
    assert torch.equal(result.prompt_ids[0], result.prompt_ids[2])
    assert not torch.equal(result.image_tokens[0], result.image_tokens[1])


def test_image_rollout_is_seeded(tiny_policy):
    a = rollout_images(tiny_policy, CAPTIONS, group_size=2, seed=11, decode=False).image_tokens
    b = rollout_images(tiny_policy, CAPTIONS, group_size=2, seed=11, decode=False).image_tokens
    c = rollout_images(tiny_policy, CAPTIONS, group_size=2, seed=12, decode=False).image_tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_image_rollout_does_not_depend_on_batch_padding(tiny_policy):
    alone = rollout_images(tiny_policy, ["a red circle"], greedy=True, decode=False).image_tokens
    padded = rollout_images(tiny_policy,
        ["a red circle", "a blue square left of a green triangle"], greedy=True, decode=False
    )
    assert not bool(padded.prompt_mask[0].all())  # the first caption really was left padded
    assert torch.equal(padded.image_tokens[:1], alone)


def test_max_rows_chunking_gives_the_same_greedy_images(tiny_policy):
    whole = rollout_images(tiny_policy, CAPTIONS, group_size=2, greedy=True, decode=False).image_tokens
    chunked = rollout_images(tiny_policy,
        CAPTIONS, group_size=2, greedy=True, decode=False, max_rows=3
    ).image_tokens
    assert torch.equal(whole, chunked)


def test_a_prefix_of_the_codes_padded_to_the_full_shape_decodes(tiny_policy):
    """sample_image_codes(num_codes=k): the first k codes of the same seeded rollout; padded with code 0
    to N codes they decode to full-size images."""
    n = tiny_policy.num_image_tokens
    prompt_ids, prompt_mask, codes = sample_image_codes(tiny_policy, CAPTIONS, num_codes=3, seed=0)
    assert tuple(codes.shape) == (2, 3)
    full = rollout_images(tiny_policy, CAPTIONS, seed=0, decode=False)
    assert torch.equal(codes, full.image_tokens[:, :3])
    assert torch.equal(prompt_ids, full.prompt_ids) and torch.equal(prompt_mask, full.prompt_mask)
    padded = torch.cat([codes, codes.new_zeros(2, n - 3)], dim=1)  # [2, N]
    assert tuple(padded.shape) == (2, n) and int(padded[:, 3:].abs().sum()) == 0
    images = decode_images(tiny_policy, padded)
    assert len(images) == 2 and images[0].size == (32, 32)
    for bad in (0, n + 1):
        with pytest.raises(ValueError, match="num_codes"):
            sample_image_codes(tiny_policy, CAPTIONS, num_codes=bad, seed=0)


def test_greedy_text_rollout_matches_transformers_generate(tiny_policy):
    images, questions = sample_images(2), ["what color?", "how many circles are there left of the square ?"]
    encoded = encode_understanding(tiny_policy.processor, images, questions)
    assert not bool(encoded.attention_mask.all())  # padded batch
    reference = tiny_policy.model.generate(
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        pixel_values=encoded.pixel_values.double(),
        do_sample=False,
        max_new_tokens=7,
    )[:, encoded.input_ids.shape[1] :]
    ours = rollout_text(tiny_policy, images, questions, greedy=True, max_new_tokens=7)
    assert torch.equal(ours.completion_ids, reference)
    assert bool(ours.is_truncated.all()) and bool(ours.completion_mask.all())


def _eos_prone_policy(bias: float) -> JanusPolicy:
    """A tiny policy whose text head favours EOS by `bias` nats (a bias on lm_head)."""
    model, processor = tiny_janus(3, dtype=torch.float64)
    policy = JanusPolicy(model, processor)
    vocab = model.config.text_config.vocab_size
    model.lm_head.bias = torch.nn.Parameter(torch.zeros(vocab, dtype=torch.float64))
    with torch.no_grad():
        model.lm_head.bias[policy.tokens.eos_id] = bias
    return policy


def test_text_rollout_masks_after_first_eos_and_decodes_texts():
    policy = _eos_prone_policy(4.0)  # EOS at random steps: some rows end early, others run out
    result = rollout_text(policy,
        sample_images(2), ["what color?", "which shape?"], group_size=8, max_new_tokens=6, seed=0
    )
    eos = policy.tokens.eos_id
    ids, mask = result.completion_ids, result.completion_mask
    ended = (ids == eos).any(dim=1)
    assert bool(ended.any()) and not bool(ended.all())  # both cases present
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        if ended[row]:
            first = int((ids[row] == eos).nonzero()[0])
            assert n == first + 1 and bool((ids[row, n:] == policy.tokens.pad_id).all())
        else:
            assert n == ids.shape[1]
        assert result.texts[row] == policy.tokenizer.decode(ids[row, :n], skip_special_tokens=True)
    assert torch.equal(result.is_truncated, ~ended)
    assert result.pixel_values.shape[0] == 16 and torch.equal(result.pixel_values[0], result.pixel_values[7])


def test_text_rollout_is_seeded_and_supports_top_k_top_p(tiny_policy):
    images, questions = sample_images(2), ["what color?", "which shape?"]
    kwargs = {"group_size": 2, "max_new_tokens": 5, "top_k": 20, "top_p": 0.9}
    a = rollout_text(tiny_policy, images, questions, seed=5, **kwargs).completion_ids
    b = rollout_text(tiny_policy, images, questions, seed=5, **kwargs).completion_ids
    c = rollout_text(tiny_policy, images, questions, seed=6, **kwargs).completion_ids
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy_k1 = rollout_text(tiny_policy, images, questions, seed=1, max_new_tokens=5, top_k=1).completion_ids
    greedy = rollout_text(tiny_policy, images, questions, greedy=True, max_new_tokens=5).completion_ids
    assert torch.equal(greedy_k1, greedy)


def test_text_rollout_never_samples_the_image_placeholder():
    policy = _eos_prone_policy(0.0)
    with torch.no_grad():  # make the placeholder the model's favourite answer token
        policy.model.lm_head.bias[policy.tokens.image_token_id] = 50.0
    result = rollout_text(policy, sample_images(2), ["what color?", "which shape?"], max_new_tokens=4, seed=0)
    assert not bool((result.completion_ids == policy.tokens.image_token_id).any())
    logps = text_token_logps(policy,
        result.prompt_ids,
        result.prompt_mask,
        result.pixel_values,
        result.completion_ids,
        result.completion_mask,
    )
    assert bool(torch.isfinite(logps).all())
