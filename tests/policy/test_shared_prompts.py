"""Packed scoring of a group's answers (one prompt, several completions) against the row-by-row forward."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from corl.generation.rollout import rollout_text
from corl.policy import scoring
from corl.policy.policy import JanusPolicy
from corl.policy.scoring import text_token_logits, text_token_logps
from corl.policy.shared_prompts import (
    attention_mask_for,
    consecutive_prompt_groups,
    packed_layout,
)
from corl.policy.testing import sample_images, tiny_janus

QUESTIONS = ["what color?", "how many circles are there left of the square ?"]  # different lengths: padding


def group_rollout(policy, group_size=3, max_new_tokens=6):
    rollout = rollout_text(policy, sample_images(2), QUESTIONS, group_size=group_size,
                           max_new_tokens=max_new_tokens, seed=0)
    assert not bool(rollout.prompt_mask.all())  # left padding in play
    mask = rollout.completion_mask.clone()
    mask[1, 2:] = 0  # answers of one group end at different lengths
    mask[4, 4:] = 0
    return rollout, mask


def test_groups_are_runs_of_equal_prompt_and_image():
    ids = torch.tensor([[1, 2], [1, 2], [1, 2], [3, 4], [1, 2]])
    mask = torch.ones_like(ids)
    images = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])[:, None]  # row 2 has the same question, another image
    groups = consecutive_prompt_groups(ids, mask, images)
    assert groups.group.tolist() == [0, 0, 1, 2, 3]
    assert groups.slot.tolist() == [0, 1, 0, 0, 0]
    assert groups.first_row.tolist() == [0, 2, 3, 4]
    assert groups.max_size == 2
    # without images the first three rows are one group
    assert consecutive_prompt_groups(ids, mask).group.tolist() == [0, 0, 0, 1, 2]


def test_layout_mask_blocks_completions_from_each_other():
    ids = torch.tensor([[0, 5, 6], [0, 5, 6]])
    prompt_mask = torch.tensor([[0, 1, 1], [0, 1, 1]])  # one pad on the left
    completion_mask = torch.tensor([[1, 1], [1, 0]])
    layout = packed_layout(consecutive_prompt_groups(ids, prompt_mask), prompt_mask, completion_mask)
    keep = layout.keep[0, 0]  # [L, L] with L = 3 + 2 * 2
    assert layout.length == 7
    # first completion's second token: the prompt's real tokens and its own completion, causally
    assert keep[4].tolist() == [False, True, True, True, True, False, False]
    # second completion's first token never sees the first completion
    assert keep[5].tolist() == [False, True, True, False, False, True, False]
    # a padded completion token (key 6) is attended by no other query; as a query it sees itself (no empty row)
    assert not keep[:6, 6].any()
    assert keep[6].tolist() == [False, True, True, False, False, True, True]
    assert layout.positions[0].tolist() == [0, 0, 1, 2, 3, 2, 3]
    assert attention_mask_for(layout, "eager", torch.float32)[0, 0, 5, 3] == torch.finfo(torch.float32).min
    with pytest.raises(ValueError, match="attention"):
        attention_mask_for(layout, "flash_attention_2", torch.float32)


# eager in float32: transformers' own eager mask gives NaN states for left-padded float64 rows
@pytest.mark.parametrize(("attention", "dtype", "tol"), [("sdpa", torch.float64, 1e-10), ("eager", torch.float32, 1e-5)])
def test_packed_logps_equal_row_by_row(attention, dtype, tol):
    model, processor = tiny_janus(0, dtype=dtype)
    policy = JanusPolicy(model, processor)
    rollout, mask = group_rollout(policy)
    model.model.language_model.config._attn_implementation = attention  # the scoring's attention
    args = (policy, rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values, rollout.completion_ids, mask)
    plain, plain_entropy = text_token_logps(*args, return_entropy=True)
    packed, packed_entropy = text_token_logps(*args, return_entropy=True, share_prompts=True)
    torch.testing.assert_close(packed * mask, plain * mask, atol=tol, rtol=tol)
    torch.testing.assert_close(packed_entropy * mask, plain_entropy * mask, atol=tol, rtol=tol)
    # a split group (rows 0-1 of a group of 3, e.g. an update chunk's edge) is scored the same way
    part = [a[:5] if isinstance(a, torch.Tensor) else a for a in args]
    torch.testing.assert_close(text_token_logps(*part, share_prompts=True) * mask[:5], plain[:5] * mask[:5],
                               atol=tol, rtol=tol)


def test_packed_scoring_runs_each_prompt_once(tiny_policy, monkeypatch):
    rollout, mask = group_rollout(tiny_policy, group_size=4)
    seen = []
    original = scoring.understanding_embeddings
    monkeypatch.setattr(scoring, "understanding_embeddings",
                        lambda model, ids, pixels: seen.append(ids.shape[0]) or original(model, ids, pixels))
    text_token_logits(tiny_policy, rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values,
                      rollout.completion_ids, mask, share_prompts=True)
    assert seen == [2]  # 2 prompts, 8 rows


def test_packed_gradients_equal_row_by_row():
    model, processor = tiny_janus(0, dtype=torch.float64)
    policies = [JanusPolicy(model, processor), JanusPolicy(copy.deepcopy(model), processor)]
    rollout, mask = group_rollout(policies[0])
    grads = []
    for policy, share in zip(policies, (False, True), strict=True):
        for p in policy.model.parameters():
            p.requires_grad_(True)
        logps = text_token_logps(policy, rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values,
                                 rollout.completion_ids, mask, share_prompts=share)
        (logps * mask * torch.linspace(-1, 1, logps.shape[0])[:, None]).sum().backward()
        grads.append({n: p.grad for n, p in policy.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, grad in grads[0].items():  # transformers' RMSNorm runs in float32: float32-level rounding
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6 * grad.abs().max().item() + 1e-12, rtol=0,
                                   msg=name)


def test_attention_without_masks_scores_row_by_row(caplog, monkeypatch):
    model, processor = tiny_janus(0, dtype=torch.float64)
    policy = JanusPolicy(model, processor)
    rollout, mask = group_rollout(policy)
    args = (policy, rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values, rollout.completion_ids, mask)
    plain = text_token_logps(*args)
    packing = []
    original = scoring.packed_layout
    monkeypatch.setattr(scoring, "packed_layout", lambda *a: packing.append(1) or original(*a))
    text_token_logps(*args, share_prompts=True)
    assert packing == [1]
    packing.clear()
    monkeypatch.setattr(scoring, "PACKABLE_ATTENTION", ("eager",))  # as if the model's attention took no mask
    with caplog.at_level(logging.INFO, logger="corl.policy.scoring"):
        fallback = text_token_logps(*args, share_prompts=True)
    assert packing == []
    assert "sdpa attention takes no 4-D mask" in caplog.text
    torch.testing.assert_close(fallback, plain, atol=0, rtol=0)


def test_benchmark_scores_a_micro_batch_both_ways(tiny_policy, capsys):
    """benchmarks/shared_prompts.py's scoring part on a tiny policy: both ways run, the log-probs agree."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "shared_prompts.py"
    spec = importlib.util.spec_from_file_location("shared_prompts_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, processor = tiny_janus(0, dtype=torch.float64)
    policy = JanusPolicy(model, processor)
    rollout, _ = group_rollout(policy, group_size=4)
    assert bench.prompt_groups(rollout).max_size == 4
    bench.time_scoring(policy, rollout, temperature=1.0, repeats=1)
    out = capsys.readouterr().out
    assert "8 answers to 2 prompts" in out
    difference = float(out.split("answer tokens: ")[1].split()[0])
    assert difference < 1e-9
    assert "forward + backward" in out and out.count("x\n") >= 2
