"""Scoring against a naive reference that recomputes every token from scratch.

The reference strips each row's left padding and runs one full forward pass (no cache, no mask, no
position ids) per token over the exact prefix, so it cannot share an off-by-one or padding bug with
the batched implementation.
"""

from __future__ import annotations

import functools

import pytest
import torch

from corl.generation.rollout import rollout_images, rollout_text
from corl.policy import scoring
from corl.policy.logits import unconditional_prompt
from corl.policy.policy import JanusPolicy, trainable_parameters
from corl.policy.scoring import image_token_logps, text_token_logps
from corl.policy.testing import sample_images, tiny_janus

CAPTIONS = ["a red circle", "two green triangles above a yellow square"]  # different lengths: padding
QUESTIONS = ["what color?", "how many circles are there left of the square ?"]


def naive_image_logps(policy, prompt_ids, prompt_mask, image_tokens, cfg_weight, temperature=1.0):
    model = policy.model
    lm = model.model.language_model
    out = torch.zeros(image_tokens.shape, dtype=torch.float64)
    with torch.no_grad():
        for row in range(prompt_ids.shape[0]):
            prompt = prompt_ids[row][prompt_mask[row].bool()]  # padding stripped
            uncond = unconditional_prompt(
                prompt, bos_id=policy.tokens.bos_id, boi_id=policy.tokens.boi_id, pad_id=policy.tokens.pad_id
            )
            for t in range(image_tokens.shape[1]):
                codes = image_tokens[row, :t][None]

                def last_logits(ids, codes=codes):
                    embeds = torch.cat(
                        [
                            lm.get_input_embeddings()(ids[None]),
                            model.prepare_embeddings_for_image_generation(codes),
                        ],
                        1,
                    )
                    hidden = lm(inputs_embeds=embeds).last_hidden_state[0, -1]
                    return model.model.generation_head(hidden)

                logits = last_logits(prompt)
                if cfg_weight is not None:
                    u = last_logits(uncond)
                    logits = u + cfg_weight * (logits - u)
                out[row, t] = torch.log_softmax(logits / temperature, -1)[image_tokens[row, t]]
    return out


def naive_text_logps(policy, prompt_ids, prompt_mask, pixel_values, completion_ids, completion_mask):
    out = torch.zeros(completion_ids.shape, dtype=torch.float64)
    with torch.no_grad():
        for row in range(prompt_ids.shape[0]):
            prompt = prompt_ids[row][prompt_mask[row].bool()]
            for t in range(int(completion_mask[row].sum())):
                ids = torch.cat([prompt, completion_ids[row, :t]])[None]
                logits = policy.model(input_ids=ids, pixel_values=pixel_values[row : row + 1]).logits[0, -1]
                logits[policy.tokens.image_token_id] = float("-inf")  # never an answer token (see rollout)
                out[row, t] = torch.log_softmax(logits, -1)[completion_ids[row, t]]
    return out


@pytest.mark.parametrize("cfg_weight", [None, 5.0])
def test_image_logps_equal_naive_reference_with_padding(tiny_policy, cfg_weight):
    rollout = rollout_images(tiny_policy, CAPTIONS, group_size=2, seed=0, decode=False)
    assert not bool(rollout.prompt_mask.all())
    ours = image_token_logps(tiny_policy,
        rollout.prompt_ids, rollout.prompt_mask, rollout.image_tokens, cfg_weight
    )
    reference = naive_image_logps(
        tiny_policy, rollout.prompt_ids, rollout.prompt_mask, rollout.image_tokens, cfg_weight
    )
    assert ours.shape == rollout.image_tokens.shape
    torch.testing.assert_close(ours.double(), reference, atol=1e-5, rtol=1e-5)
    # the one-position-off mistake would give clearly different numbers
    shifted = torch.roll(rollout.image_tokens, 1, dims=1)
    wrong = image_token_logps(tiny_policy, rollout.prompt_ids, rollout.prompt_mask, shifted, cfg_weight)
    assert (wrong - ours).abs().max() > 0.1


def test_text_logps_equal_naive_reference_with_padding(tiny_policy):
    rollout = rollout_text(tiny_policy, sample_images(2), QUESTIONS, group_size=2, max_new_tokens=6, seed=0)
    assert not bool(rollout.prompt_mask.all())
    mask = rollout.completion_mask.clone()
    mask[1, 3:] = 0  # pretend row 1 ended early: masked tails must not change the valid positions
    ours = text_token_logps(tiny_policy,
        rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values, rollout.completion_ids, mask
    )
    reference = naive_text_logps(
        tiny_policy,
        rollout.prompt_ids,
        rollout.prompt_mask,
        rollout.pixel_values,
        rollout.completion_ids,
        mask,
    )
    torch.testing.assert_close(ours.double() * mask, reference * mask, atol=1e-5, rtol=1e-5)


def test_sampled_tokens_are_scored_under_the_sampling_distribution(tiny_policy, monkeypatch):
    """Record the logits the rollout sampled from; scoring with the same settings must reproduce them."""
    from corl.generation import rollout as rollout_module

    seen: list[torch.Tensor] = []

    def record(logits, token, temperature):
        seen.append(torch.log_softmax(logits.double() / temperature, -1).gather(1, token[:, None])[:, 0])
        return token

    draw_text, draw_image = rollout_module.sample_next, rollout_module.sample_with_noise
    monkeypatch.setattr(
        rollout_module, "sample_next", lambda logits, **kw: record(logits, draw_text(logits, **kw), kw["temperature"])
    )
    monkeypatch.setattr(
        rollout_module,
        "sample_with_noise",
        lambda logits, noise, **kw: record(logits, draw_image(logits, noise, **kw), kw["temperature"]),
    )
    result = rollout_images(tiny_policy,
        CAPTIONS, group_size=2, cfg_weight=3.0, temperature=0.7, seed=4, decode=False
    )
    sampled_logps = torch.stack(seen, dim=1)  # [R, N]
    scored = image_token_logps(tiny_policy,
        result.prompt_ids, result.prompt_mask, result.image_tokens, 3.0, temperature=0.7
    )
    torch.testing.assert_close(scored.double(), sampled_logps, atol=1e-6, rtol=1e-6)

    seen.clear()
    text = rollout_text(tiny_policy,
        sample_images(2), QUESTIONS, group_size=2, max_new_tokens=5, temperature=1.3, seed=2
    )
    sampled_text = torch.stack(seen, dim=1)
    scored_text = text_token_logps(tiny_policy,
        text.prompt_ids,
        text.prompt_mask,
        text.pixel_values,
        text.completion_ids,
        text.completion_mask,
        temperature=1.3,
    )
    torch.testing.assert_close(scored_text.double(), sampled_text, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cfg_weight", [1.0, 5.0])
def test_greedy_tokens_are_the_argmax_of_the_scoring_distribution(tiny_policy, cfg_weight):
    result = rollout_images(tiny_policy,
        CAPTIONS, group_size=1, cfg_weight=cfg_weight, greedy=True, decode=False
    )
    logits = scoring.image_token_logits(
        tiny_policy, result.prompt_ids, result.prompt_mask, result.image_tokens, cfg_weight
    )
    assert torch.equal(logits.argmax(-1), result.image_tokens)
    text = rollout_text(tiny_policy, sample_images(2), QUESTIONS, greedy=True, max_new_tokens=6)
    text_logits = scoring.text_token_logits(
        tiny_policy,
        text.prompt_ids,
        text.prompt_mask,
        text.pixel_values,
        text.completion_ids,
        text.completion_mask,
    )
    assert torch.equal(text_logits.argmax(-1), text.completion_ids)


def test_cfg_and_conditional_scores_differ_and_entropy_is_returned(tiny_policy):
    result = rollout_images(tiny_policy, CAPTIONS, seed=1, decode=False)
    cond, cond_entropy = image_token_logps(tiny_policy,
        result.prompt_ids, result.prompt_mask, result.image_tokens, None, return_entropy=True
    )
    guided = image_token_logps(tiny_policy, result.prompt_ids, result.prompt_mask, result.image_tokens, 5.0)
    assert (cond - guided).abs().max() > 0.1
    vocab = tiny_policy.model.config.vq_config.num_embeddings
    assert bool((cond_entropy > 0).all()) and bool(
        (cond_entropy <= torch.log(torch.tensor(float(vocab))) + 1e-5).all()
    )
    assert bool((cond <= 0).all()) and bool(torch.isfinite(guided).all())


def test_gradients_reach_only_trainable_parameters():
    model, processor = tiny_janus(5)
    policy = JanusPolicy(model, processor)
    trainable_parameters(policy)  # default: language model (+ text head)
    result = rollout_images(policy, CAPTIONS, seed=0, decode=False)
    text = rollout_text(policy, sample_images(2), QUESTIONS, max_new_tokens=4, seed=0)
    model.train()
    loss = -image_token_logps(policy, result.prompt_ids, result.prompt_mask, result.image_tokens, 5.0).mean()
    loss = (
        loss
        - text_token_logps(policy,
            text.prompt_ids, text.prompt_mask, text.pixel_values, text.completion_ids, text.completion_mask
        ).mean()
    )
    loss.backward()
    layer = model.model.language_model.layers[0].self_attn.q_proj.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    for frozen in (
        model.model.generation_head,
        model.model.generation_embeddings,
        model.model.vision_model,
        model.model.aligner,
        model.model.generation_aligner,
        model.model.vqmodel,
    ):
        assert all(p.grad is None for p in frozen.parameters())


@pytest.mark.parametrize("task", ["image", "text"])
def test_chunked_scoring_equals_one_piece_in_values_and_gradients(task, monkeypatch):
    """A tiny logits budget forces several checkpointed chunks; numbers and gradients must not move."""
    model, processor = tiny_janus(6, dtype=torch.float64)
    policy = JanusPolicy(model, processor)
    params = trainable_parameters(policy)
    if task == "image":
        r = rollout_images(policy, CAPTIONS, group_size=2, seed=0, decode=False)
        args = (r.prompt_ids, r.prompt_mask, r.image_tokens, 5.0)
        score = functools.partial(image_token_logps, policy)
    else:
        r = rollout_text(policy, sample_images(2), QUESTIONS, group_size=2, max_new_tokens=6, seed=0)
        args = (r.prompt_ids, r.prompt_mask, r.pixel_values, r.completion_ids, r.completion_mask)
        score = functools.partial(text_token_logps, policy)

    def run(**budget):
        model.zero_grad(set_to_none=True)
        logps, entropy = score(*args, temperature=0.7, return_entropy=True, **budget)
        (logps * torch.linspace(0.5, 1.5, logps.shape[1], dtype=logps.dtype)).sum().backward()
        return logps.detach(), entropy, [None if p.grad is None else p.grad.clone() for p in params]

    whole = run()
    seen_chunks = []
    original = scoring._chunk_positions
    # the budget (logits_chunk_mb) reaches the chunking; 2 positions per chunk whatever it says
    monkeypatch.setattr(scoring, "_chunk_positions", lambda *a: seen_chunks.append(a[-1]) or 2)
    chunked = run(logits_chunk_mb=1)
    monkeypatch.setattr(scoring, "_chunk_positions", original)
    assert seen_chunks == [1] and whole[0].shape[1] > 2  # really split into several chunks
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-10, atol=1e-10)
    assert not chunked[1].requires_grad  # entropy is a metric
    assert sum(grad is not None for grad in whole[2]) > 10
    for got, want in zip(chunked[2], whole[2], strict=True):
        assert (got is None) == (want is None)
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
