"""Tests of corl.algos with hand-computed numbers (derivations in the comments, eps = 1e-4)."""

from __future__ import annotations

import math

import pytest
import torch

from corl.algos import (
    chunk_weight,
    group_advantages,
    k3_kl,
    policy_loss,
    unified_advantages,
)

torch.set_num_threads(1)
NAN = float("nan")
INF = float("inf")


def assert_close(actual: torch.Tensor | float, expected: list[float] | float, atol: float = 1e-6) -> None:
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64),
        atol=atol, rtol=0,
    )


# --------------------------------------------------------------------------------------------------
# group_advantages
# --------------------------------------------------------------------------------------------------

# Two prompts, G = 3. Group 0: [1, 2, 3], mean 2, deviations [-1, 0, 1], unbiased std
# sqrt((1 + 0 + 1) / 2) = 1. Group 1: [5, 5, 5], std 0.
# Batch: mean 3.5, squared deviations 6.25 + 2.25 + 0.25 + 3 * 2.25 = 15.5, unbiased std
# sqrt(15.5 / 5) = 1.7606817, so 1 / (1.7606817 + 1e-4) = 0.5679296.
REWARDS = [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("group", [-0.9999000, 0.0, 0.9999000, 0.0, 0.0, 0.0]),  # +-1 / (1 + 1e-4)
        ("batch", [-0.5679296, 0.0, 0.5679296, 0.0, 0.0, 0.0]),
        ("none", [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
    ],
)
def test_group_advantages_scale_modes(mode: str, expected: list[float]) -> None:
    adv, stats = group_advantages(torch.tensor(REWARDS), num_generations=3, scale_rewards=mode)
    assert adv.dtype == torch.float32 and adv.shape == (6,)
    assert_close(adv, expected)
    assert torch.equal(adv[3:], torch.zeros(3))  # zero-std group: exactly 0
    assert stats["frac_reward_zero_std"] == 0.5
    assert stats["frac_reward_invalid"] == 0.0
    assert_close(stats["reward_mean"], 3.5)
    assert_close(stats["reward_std"], 0.5)  # mean of the group stds (1 and 0), as TRL logs it


def test_group_advantages_bool_aliases_match_trl() -> None:
    adv_true, _ = group_advantages(REWARDS, 3, scale_rewards=True)
    adv_false, _ = group_advantages(REWARDS, 3, scale_rewards=False)
    assert_close(adv_true, [-0.9999000, 0.0, 0.9999000, 0.0, 0.0, 0.0])
    assert_close(adv_false, [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def test_zero_std_group_is_exactly_zero_despite_rounding() -> None:
    # 0.1 + 0.2 = 0.30000000000000004 in float64: "r - mean" would be ~1e-17, not 0.
    rewards = [0.1 + 0.2, 0.3, 0.3]
    for mode in ("group", "batch", "none"):
        adv, stats = group_advantages(rewards, 3, scale_rewards=mode)
        assert torch.equal(adv, torch.zeros(3)), mode
        assert stats["frac_reward_zero_std"] == 1.0


def test_missing_rewards_are_excluded_and_get_zero_advantage() -> None:
    # Group 0: [1, None, 3] -> valid [1, 3], mean 2, unbiased std sqrt(1 + 1) = 1.4142136,
    # A = +-1 / (1.4142136 + 1e-4) = +-0.7070568. Group 1: [2, 2, NaN] -> valid [2, 2], zero std.
    adv, stats = group_advantages([1.0, None, 3.0, 2.0, 2.0, NAN], 3, "group")
    assert_close(adv, [-0.7070568, 0.0, 0.7070568, 0.0, 0.0, 0.0])
    assert adv[1].item() == 0.0 and adv[5].item() == 0.0
    assert_close(stats["frac_reward_invalid"], 2 / 6)
    assert stats["frac_reward_zero_std"] == 0.5
    assert_close(stats["reward_mean"], 2.0)  # (1 + 3 + 2 + 2) / 4


def test_single_valid_reward_or_none_gives_zero_and_no_nan() -> None:
    adv, stats = group_advantages([None, 4.0, None, None], 2, "group")
    assert torch.equal(adv, torch.zeros(4))
    assert stats["frac_reward_zero_std"] == 1.0  # no spread possible with < 2 valid rewards
    adv, stats = group_advantages([None, None], 2, "batch")
    assert torch.equal(adv, torch.zeros(2))
    assert math.isnan(stats["reward_mean"])


def test_group_advantages_bad_inputs() -> None:
    with pytest.raises(ValueError, match="multiple of num_generations"):
        group_advantages([1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError, match="inf"):
        group_advantages([1.0, INF], 2)
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages([1.0, 2.0], 2, scale_rewards="std")
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), 2)


# --------------------------------------------------------------------------------------------------
# unified_advantages (B = 1, G = 2, lambda = 0.8, scale_rewards = "group")
# --------------------------------------------------------------------------------------------------
# r_t2i = [0.2, 0.6], r_mm2t = [1.0, 0.0].
# joint_reward: R = [0.2 + 0.8, 0.6 + 0] = [1.0, 0.6], deviations +-0.2, std sqrt(0.08) = 0.2828427,
#   A = +-0.2 / 0.2829427 = +-0.7068569 (image 0 is pushed up because its answer was right).
# separate: A_t2i = -+0.7068569; A_mm2t: deviations +-0.5, std sqrt(0.5) = 0.7071068,
#   A = +-0.5 / 0.7072068 = +-0.7070068.
# joint_advantage: A = A_t2i + 0.8 * A_mm2t = -0.7068569 + 0.5656054 = -0.1412514 (and +0.1412514).
R_T2I = [0.2, 0.6]
R_MM2T = [1.0, 0.0]


def test_unified_joint_reward() -> None:
    adv_t2i, adv_mm2t, stats = unified_advantages(R_T2I, R_MM2T, 2, mode="joint_reward", lam=0.8)
    assert_close(adv_t2i, [0.7068569, -0.7068569])
    assert_close(adv_mm2t, [0.7068569, -0.7068569])
    assert_close(stats["joint/reward_mean"], 0.8)
    assert_close(stats["t2i/reward_mean"], 0.4)
    assert_close(stats["mm2t/reward_mean"], 0.5)


def test_unified_joint_advantage() -> None:
    adv_t2i, adv_mm2t, _ = unified_advantages(R_T2I, R_MM2T, 2, mode="joint_advantage", lam=0.8)
    assert_close(adv_t2i, [-0.1412514, 0.1412514])
    assert_close(adv_mm2t, [-0.1412514, 0.1412514])


def test_unified_separate() -> None:
    adv_t2i, adv_mm2t, stats = unified_advantages(R_T2I, R_MM2T, 2, mode="separate", lam=0.8)
    assert_close(adv_t2i, [-0.7068569, 0.7068569])
    assert_close(adv_mm2t, [0.7070068, -0.7070068])
    assert not any(k.startswith("joint/") for k in stats)


def test_unified_joint_reward_row_missing_if_either_reward_missing() -> None:
    # G = 3. R = [0.2 + 0.8, missing, 0.4 + 0] = [1.0, -, 0.4]: mean 0.7, deviations +-0.3,
    # std sqrt(0.18) = 0.4242641, A = +-0.3 / 0.4243641 = +-0.7069402; the middle row gets 0.
    adv_t2i, adv_mm2t, stats = unified_advantages([0.2, 0.6, 0.4], [1.0, None, 0.0], 3, "joint_reward")
    assert_close(adv_t2i, [0.7069402, 0.0, -0.7069402])
    assert torch.equal(adv_t2i, adv_mm2t)
    assert_close(stats["joint/frac_reward_invalid"], 1 / 3)
    assert stats["t2i/frac_reward_invalid"] == 0.0


def test_unified_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unified mode"):
        unified_advantages(R_T2I, R_MM2T, 2, mode="sum")
    with pytest.raises(ValueError, match="pair up"):
        unified_advantages(R_T2I, [1.0, 0.0, 1.0, 0.0], 2)


# --------------------------------------------------------------------------------------------------
# policy_loss: aggregations on a ragged mask
# --------------------------------------------------------------------------------------------------
# N = 3, T = 3, mask [[1,1,1],[1,0,0],[0,0,0]], advantages [1, -2, 3] (row 2 is empty).
# Ratios (all inside [0.8, 1.2], so no clipping): row 0 [1.0, 1.1, 0.9], row 1 [1.05].
# Per-token loss -ratio * A: row 0 [-1.0, -1.1, -0.9] (sum -3.0), row 1 [2.1]; S = -0.9, 4 tokens.
#   grpo    = mean over the 2 non-empty rows of (-3.0 / 3, 2.1 / 1) = 0.55
#   bnpo    = -0.9 / 4 = -0.225
#   dr_grpo = -0.9 / (N * max_completion_length) = -0.9 / (3 * 4) = -0.075
#   dapo    = -0.9 / num_items_in_batch = -0.9 / 6 = -0.15
# Padded positions hold -inf / NaN log-probs: they must not leak.
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
ADV = torch.tensor([1.0, -2.0, 3.0])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, NAN, -INF], [NAN, NAN, NAN]])
LOG_RATIO = torch.tensor([[0.0, math.log(1.1), math.log(0.9)], [math.log(1.05), 0.0, 0.0], [0.0, 0.0, 0.0]])


def ragged_logps() -> torch.Tensor:
    logps = OLD + LOG_RATIO
    logps[1, 1:] = -INF
    logps[2] = NAN
    return logps.requires_grad_(True)


@pytest.mark.parametrize(
    ("loss_type", "kwargs", "expected"),
    [
        ("grpo", {}, 0.55),
        ("bnpo", {}, -0.225),
        ("dr_grpo", {"max_completion_length": 4}, -0.075),
        ("dapo", {"num_items_in_batch": 6}, -0.15),
        ("dapo", {"num_items_in_batch": 12, "num_processes": 2}, -0.15),
        ("dapo", {}, -0.225),  # no global normaliser: the local token mean, same as bnpo
    ],
)
def test_loss_aggregations_on_ragged_mask(loss_type: str, kwargs: dict, expected: float) -> None:
    logps = ragged_logps()
    loss, metrics = policy_loss(logps, OLD, ADV, MASK, loss_type=loss_type, **kwargs)
    assert_close(loss.detach(), expected)
    loss.backward()
    assert torch.isfinite(logps.grad).all()
    assert torch.equal(logps.grad[MASK == 0], torch.zeros(int((MASK == 0).sum())))
    assert metrics["num_tokens"].item() == 4.0
    assert_close(metrics["ratio_mean"], (1.0 + 1.1 + 0.9 + 1.05) / 4)
    assert metrics["clip_ratio/region_mean"].item() == 0.0


def test_gradient_accumulation_divides_local_losses_only() -> None:
    def loss_of(loss_type: str, **kwargs) -> float:
        loss, _ = policy_loss(ragged_logps(), OLD, ADV, MASK, loss_type=loss_type, gradient_accumulation_steps=2,
                              **kwargs)
        return loss.item()

    assert_close(loss_of("grpo"), 0.55 / 2)
    assert_close(loss_of("bnpo"), -0.225 / 2)
    assert_close(loss_of("dr_grpo", max_completion_length=4), -0.075 / 2)
    # num_items_in_batch already counts the tokens of both micro-batches: no further division.
    assert_close(loss_of("dapo", num_items_in_batch=6), -0.15)


def test_gradients_flow_only_through_valid_tokens() -> None:
    # grpo: d loss / d logp_it = (1 / non-empty rows) * (1 / n_i) * (-ratio_it * A_i) when unclipped.
    # Row 0: (1/2)(1/3)(-[1.0, 1.1, 0.9]) = [-0.1666667, -0.1833333, -0.15]; row 1: (1/2)(1)(2.1) = 1.05.
    logps = ragged_logps()
    loss, _ = policy_loss(logps, OLD, ADV, MASK, loss_type="grpo")
    loss.backward()
    expected = [[-0.1666667, -0.1833333, -0.15], [1.05, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert_close(logps.grad, expected)


def test_on_policy_ratio_is_one_and_gradient_is_policy_gradient() -> None:
    # old = None: ratio == 1, loss = -A = -2 (grpo mean), gradient -A / n_i = -1 per valid token.
    logps = torch.tensor([[-0.3, -1.2, -5.0]], requires_grad=True)
    loss, metrics = policy_loss(logps, None, torch.tensor([2.0]), torch.tensor([[1, 1, 0]]))
    assert_close(loss.detach(), -2.0)
    loss.backward()
    assert_close(logps.grad, [[-1.0, -1.0, 0.0]])
    assert metrics["ratio_mean"].item() == 1.0


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_all_empty_mask_gives_zero_loss_without_nan(loss_type: str) -> None:
    logps = torch.full((2, 3), NAN, requires_grad=True)
    loss, metrics = policy_loss(
        logps, torch.full((2, 3), NAN), torch.tensor([1.0, -1.0]), torch.zeros(2, 3, dtype=torch.bool),
        loss_type=loss_type, max_completion_length=3, beta=0.1, ref_per_token_logps=torch.full((2, 3), NAN),
    )
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logps.grad, torch.zeros(2, 3))
    assert all(torch.isfinite(v) for v in metrics.values())


# --------------------------------------------------------------------------------------------------
# policy_loss: clipping
# --------------------------------------------------------------------------------------------------
# epsilon = 0.2, epsilon_high = 0.28, bnpo over 4 tokens, old logps 0 so logp = log(ratio).
# Row 0, A = +1: ratio 1.5 > 1.28 -> loss -min(1.5, 1.28) = -1.28, clipped, gradient 0;
#                ratio 1.1         -> loss -1.1, gradient -1.1 / 4 = -0.275.
# Row 1, A = -1: ratio 0.5 < 0.8  -> loss -min(-0.5, -0.8) = 0.8, clipped, gradient 0;
#                ratio 1.5         -> loss -min(-1.5, -1.2) = 1.5, NOT clipped (pessimistic side),
#                                     gradient -ratio * A / 4 = 0.375.
# Loss = (-1.28 - 1.1 + 0.8 + 1.5) / 4 = -0.02. Clip fractions: low 1/4, high 1/4, region 2/4.
def test_clipping_is_applied_and_counted() -> None:
    logps = torch.log(torch.tensor([[1.5, 1.1], [0.5, 1.5]])).requires_grad_(True)
    loss, metrics = policy_loss(
        logps, torch.zeros(2, 2), torch.tensor([1.0, -1.0]), torch.ones(2, 2),
        loss_type="bnpo", epsilon=0.2, epsilon_high=0.28,
    )
    assert_close(loss.detach(), -0.02)
    loss.backward()
    assert_close(logps.grad, [[0.0, -0.275], [0.0, 0.375]])
    assert logps.grad[0, 0].item() == 0.0 and logps.grad[1, 0].item() == 0.0
    assert_close(metrics["clip_ratio/low_mean"], 0.25)
    assert_close(metrics["clip_ratio/high_mean"], 0.25)
    assert_close(metrics["clip_ratio/region_mean"], 0.5)
    assert_close(metrics["ratio_mean"], (1.5 + 1.1 + 0.5 + 1.5) / 4)


def test_epsilon_high_defaults_to_epsilon() -> None:
    # A = +1, ratio 1.5, epsilon 0.2: loss -min(1.5, 1.2) = -1.2.
    loss, metrics = policy_loss(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), torch.tensor([1.0]),
                                torch.ones(1, 1), epsilon=0.2)
    assert_close(loss, -1.2)
    assert metrics["clip_ratio/high_mean"].item() == 1.0


# --------------------------------------------------------------------------------------------------
# KL
# --------------------------------------------------------------------------------------------------
# logp = -1.0, ref = -1.5: q = -0.5, k3 = exp(-0.5) + 0.5 - 1 = 0.1065307; d k3 / d logp = 1 - exp(q) = 0.3934693.
# logp = -1.5, ref = -1.0: q = 0.5, k3 = exp(0.5) - 0.5 - 1 = 0.1487213.
def test_k3_values() -> None:
    assert_close(k3_kl(torch.tensor([-1.0, -1.5, -2.0]), torch.tensor([-1.5, -1.0, -2.0])),
                 [0.1065307, 0.1487213, 0.0])


def test_kl_term_in_loss_and_beta_zero_removes_it() -> None:
    # A = 0, tokens [-1.0, -2.0] vs ref [-1.5, -2.0]: k3 = [0.1065307, 0]; bnpo with beta = 0.1:
    # loss = 0.1 * 0.1065307 / 2 = 0.0053265; grad = 0.1 * 0.3934693 / 2 = 0.0196735 on token 0.
    ref = torch.tensor([[-1.5, -2.0]])
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, metrics = policy_loss(logps, None, torch.tensor([0.0]), torch.ones(1, 2), loss_type="bnpo",
                                beta=0.1, ref_per_token_logps=ref)
    assert_close(loss.detach(), 0.0053265)
    assert_close(metrics["kl"], 0.1065307 / 2)
    loss.backward()
    assert_close(logps.grad, [[0.0196735, 0.0]])

    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, metrics = policy_loss(logps, None, torch.tensor([0.0]), torch.ones(1, 2), loss_type="bnpo",
                                beta=0.0, ref_per_token_logps=ref)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logps.grad, torch.zeros(1, 2))
    assert_close(metrics["kl"], 0.1065307 / 2)  # still reported, not trained on


def test_policy_loss_bad_inputs() -> None:
    logps, mask = torch.zeros(2, 3), torch.ones(2, 3)
    with pytest.raises(ValueError, match="NaN"):
        policy_loss(logps, None, torch.tensor([1.0, NAN]), mask)
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        policy_loss(logps, None, torch.zeros(2), mask, beta=0.02)
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(logps, None, torch.zeros(2), mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(logps, None, torch.zeros(2), mask, loss_type="ppo")
    with pytest.raises(ValueError, match="advantages must be"):
        policy_loss(logps, None, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="completion_mask"):
        policy_loss(logps, None, torch.zeros(2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="more valid tokens"):
        policy_loss(logps, None, torch.zeros(2), mask, loss_type="dr_grpo", max_completion_length=2)


def test_bf16_logps_are_computed_in_float32() -> None:
    # On-policy, A = 3, 2 tokens, bnpo: loss = -3; the loss is float32 and the grad keeps the input dtype.
    logps = torch.tensor([[-0.5, -1.0]], dtype=torch.bfloat16, requires_grad=True)
    loss, _ = policy_loss(logps, None, torch.tensor([3.0]), torch.ones(1, 2), loss_type="bnpo")
    assert loss.dtype == torch.float32
    assert_close(loss.detach(), -3.0)
    loss.backward()
    assert logps.grad.dtype == torch.bfloat16
    assert_close(logps.grad.float(), [[-1.5, -1.5]])  # -A / 2 tokens


# --------------------------------------------------------------------------------------------------
# scoring the rows of a micro-batch in chunks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("global_normalizer", [True, False])
def test_chunk_weights_make_chunked_losses_sum_to_the_whole(loss_type, global_normalizer) -> None:
    """Rows of unequal lengths (one of them empty), chunks of 1, 2 and 3 rows: the weighted chunk losses
    (and their gradients) equal the loss of all rows at once."""
    generator = torch.Generator().manual_seed(0)
    logps = (-torch.rand(6, 5, generator=generator, dtype=torch.float64)).requires_grad_()
    old = logps.detach() + 0.3 * torch.randn(6, 5, generator=generator, dtype=torch.float64)
    ref = logps.detach() - 0.1
    advantages = torch.randn(6, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0],
                         [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    options = dict(loss_type=loss_type, beta=0.04, max_completion_length=5, gradient_accumulation_steps=2,
                   num_items_in_batch=40.0 if global_normalizer else None, num_processes=2)
    whole, _ = policy_loss(logps, old, advantages, mask, ref_per_token_logps=ref, **options)
    (whole_grad,) = torch.autograd.grad(whole, logps)
    for size in (1, 2, 3):
        total = 0.0
        for start in range(0, 6, size):
            rows = slice(start, start + size)
            part, _ = policy_loss(logps[rows], old[rows], advantages[rows], mask[rows], ref_per_token_logps=ref[rows],
                                  **options)
            total = total + part * chunk_weight(loss_type, mask[rows], mask, global_normalizer)
        (grad,) = torch.autograd.grad(total, logps)
        assert_close(total, float(whole))
        assert torch.allclose(grad, whole_grad, atol=1e-12)


def test_chunk_weight_hand_values() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    chunk = mask[:2]  # 2 of 3 non-empty rows, 4 of 6 tokens, 2 of 4 rows
    assert chunk_weight("grpo", chunk, mask, True) == pytest.approx(2 / 3)
    assert chunk_weight("bnpo", chunk, mask, True) == pytest.approx(4 / 6)
    assert chunk_weight("dapo", chunk, mask, False) == pytest.approx(4 / 6)
    assert chunk_weight("dr_grpo", chunk, mask, True) == pytest.approx(2 / 4)
    assert chunk_weight("dapo", chunk, mask, True) == 1.0
    with pytest.raises(ValueError, match="loss_type"):
        chunk_weight("cispo", chunk, mask, True)


def test_advantage_attribution_by_hand():
    """One group of 2: R_t2i = [0, 2], R_mm2t = [0, 1], lambda 1. Joint deviations: t2i [-1, 1], mm2t
    [-0.5, 0.5], sum [-1.5, 1.5]; the t2i part's share is cov(x_t, sum) / var(sum) = 3 / 4.5 = 2/3."""
    _, _, stats = unified_advantages([0.0, 2.0], [0.0, 1.0], 2, mode="joint_reward", lam=1.0)
    assert stats["attrib/t2i_share"] == pytest.approx(2 / 3)
    assert stats["attrib/mm2t_share"] == pytest.approx(1 / 3)
    assert stats["attrib/t2i_spread"] == pytest.approx(2**0.5)  # unbiased std of [0, 2]
    assert stats["attrib/mm2t_spread"] == pytest.approx(0.5**0.5)
    assert stats["attrib/corr_t2i_adv"] == pytest.approx(1.0)


def test_advantage_attribution_sees_the_answer_reward_drive_the_image_advantage():
    """A tiny image spread beside a large answer spread: under joint_reward the image tokens' advantage
    follows the answers (t2i share near 0); under separate it is the image reward's alone (share 1)."""
    r_t2i = [0.50, 0.52, 0.49, 0.51]
    r_mm2t = [0.0, 1.6, 1.6, 0.0]
    _, _, joint = unified_advantages(r_t2i, r_mm2t, 4, mode="joint_reward", lam=0.8)
    _, _, separate = unified_advantages(r_t2i, r_mm2t, 4, mode="separate", lam=0.8)
    assert joint["attrib/t2i_share"] < 0.01 and separate["attrib/t2i_share"] == 1.0
    assert separate["attrib/corr_t2i_adv"] == pytest.approx(1.0, abs=1e-3)
    assert abs(joint["attrib/corr_t2i_adv"]) < 0.5


def test_advantage_attribution_without_spread_is_nan():
    _, _, stats = unified_advantages([0.0, 1.0], [1.0, 0.0], 2, mode="joint_reward", lam=1.0)  # joint [1, 1]
    assert math.isnan(stats["attrib/t2i_share"]) and math.isnan(stats["attrib/mm2t_share"])


def test_task_scale_group_gives_each_task_unit_spread_before_the_joint_sum():
    """R_t2i spread 0.02, R_mm2t spread 1.6: raw, the answers decide the joint advantage; as z-scores both
    weigh as lambda says, and the joint equals joint_advantage's up to the group's rescaling."""
    r_t2i = [0.50, 0.52, 0.49, 0.51]
    r_mm2t = [0.0, 1.6, 1.6, 0.0]
    _, _, raw = unified_advantages(r_t2i, r_mm2t, 4, mode="joint_reward", lam=0.8)
    adv, _, scaled = unified_advantages(r_t2i, r_mm2t, 4, mode="joint_reward", lam=0.8, task_scale="group")
    assert raw["attrib/t2i_share"] < 0.01 < 0.4 < scaled["attrib/t2i_share"]
    sum_of_advantages, _, _ = unified_advantages(r_t2i, r_mm2t, 4, mode="joint_advantage", lam=0.8)
    assert torch.allclose(adv / adv.std(), sum_of_advantages / sum_of_advantages.std(), atol=1e-3)
    adv_missing, _, _ = unified_advantages([0.5, None, 0.4, 0.6], r_mm2t, 4, task_scale="group")
    assert adv_missing[1] == 0.0  # a missing reward still masks its row
    with pytest.raises(ValueError, match="task_scale"):
        unified_advantages(r_t2i, r_mm2t, 4, task_scale="batch")
