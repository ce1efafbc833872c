"""corl.policy.logits: the tensor math on logits and masks that scoring, matching and rollouts share."""

from __future__ import annotations

import math

import torch

from corl.policy.logits import (
    cfg_logits,
    entropy_from_logits,
    positions_from_mask,
    selective_log_softmax,
    suppress_tokens,
    unconditional_prompt,
)


def test_cfg_formula_by_hand():
    cond, uncond = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    assert torch.equal(cfg_logits(cond, uncond, 5.0), torch.tensor([[6.0, -4.0, -9.0]]))
    assert torch.equal(cfg_logits(cond, uncond, 1.0), cond)


def test_positions_start_at_each_rows_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert torch.equal(positions_from_mask(mask), torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]))


def test_unconditional_prompt_keeps_bos_and_image_start():
    bos, boi, pad = 0, 4, 2
    ids = torch.tensor([[2, 2, 0, 6, 33, 50, 51, 7, 33, 4], [0, 6, 33, 50, 51, 52, 53, 7, 33, 4]])
    expected = torch.tensor([[2, 2, 0, 2, 2, 2, 2, 2, 2, 4], [0, 2, 2, 2, 2, 2, 2, 2, 2, 4]])
    assert torch.equal(unconditional_prompt(ids, bos_id=bos, boi_id=boi, pad_id=pad), expected)


def test_selective_log_softmax_and_entropy_match_full_computation():
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    index = torch.randint(0, 11, (3, 5))
    full = torch.log_softmax(logits.float(), dim=-1)
    assert torch.allclose(selective_log_softmax(logits, index), full.gather(-1, index[..., None]).squeeze(-1))
    uniform = torch.zeros(2, 8)
    assert torch.allclose(entropy_from_logits(uniform), torch.full((2,), math.log(8)))
    blocked = suppress_tokens(uniform, (0, 5))
    assert torch.isinf(blocked[:, [0, 5]]).all() and torch.equal(uniform, torch.zeros(2, 8))  # copy
    assert torch.allclose(entropy_from_logits(blocked), torch.full((2,), math.log(6)))


def test_entropy_hand_values_with_blocked_entries():
    # [0, 0, 0, 0] -> uniform over 4: H = ln 4; [0, 0, ln 2, -inf] -> p = [1/4, 1/4, 1/2, 0]:
    # H = 1/2 ln 4 + 1/2 ln 2 (a -inf logit is probability 0, not NaN)
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0), -math.inf]])
    assert torch.allclose(entropy_from_logits(logits), torch.tensor([1.3862944, 1.0397208]))
