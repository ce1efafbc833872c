"""Pure tensor math of CoRL's GRPO: group advantages, unified (t2i + mm2t) advantages, the clipped
policy loss with its four aggregations (and the weights that split it over chunks of rows) and the k3 KL
estimator.

No model, no config objects, no I/O: every function takes tensors (or plain numbers) and returns
tensors (or plain numbers), so the trainer stays a readable loop and this file can be tested with
hand-computed numbers. Vocabulary follows TRL's GRPOConfig / GRPOTrainer: ``num_generations`` (G),
``scale_rewards``, ``beta``, ``epsilon``, ``epsilon_high``, ``loss_type``, ``per_token_logps``,
``completion_mask``, ``advantages``, ``num_items_in_batch``.

Shapes: B prompts, G = num_generations completions per prompt, N = B * G rows, T completion tokens
(padded), V vocabulary. Rows are grouped prompt-major: rows [b*G, (b+1)*G) belong to prompt b.

Choices taken (and where from):

- Advantages (DeepSeekMath GRPO, as in TRL): A_i = r_i - mean_group(r); divided by the group std
  (``scale_rewards="group"``), by the std of the whole batch (``"batch"``, TRL's "PPO-lite" option;
  the mean stays the group mean) or not at all (``"none"``, Dr. GRPO). The std is the unbiased one
  (Bessel, as ``torch.std`` in TRL) and the divisor is ``std + eps`` with eps = 1e-4 as in TRL.
- Departures from TRL, for robustness: rewards may be missing (None / NaN, e.g. a reward backend
  that failed on one sample). Missing rewards are left out of every statistic and their rows get
  advantage exactly 0, so they give no gradient. A group whose valid rewards have no spread (all
  equal, or fewer than 2 valid) gets advantage exactly 0 (not "r - mean" rounding noise) and is
  counted in ``frac_reward_zero_std``. Statistics are computed in float64.
- Unified stage-1 modes (CoRL, arXiv 2505.17534): ``joint_reward`` (paper default: one reward
  R_t2i + lambda * R_mm2t, one advantage for the image and the answer of generation i),
  ``joint_advantage`` (A_t2i + lambda * A_mm2t) and ``separate`` (each task its own advantages).
- Policy loss (PPO clip with DAPO's decoupled upper bound ``epsilon_high``; k3 KL of Schulman's
  "Approximating KL divergence", as in GRPO/TRL), aggregated as TRL's ``grpo``, ``bnpo``,
  ``dr_grpo`` or ``dapo``; see :func:`policy_loss` for how bnpo and dapo differ. TRL's
  ``importance_sampling_level="sequence"`` (GSPO), ``delta`` (two-sided clip) and the newer loss
  types (cispo, sapo, ...) are not implemented.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from corl.config import LOSS_TYPES, SCALE_REWARDS_MODES, UNIFIED_MODES

logger = logging.getLogger(__name__)



# A group whose valid rewards have a std at or below this counts as "zero std". Rewards are O(1)
# scores; float32 rounding noise of sums like 0.1 + 0.2 is ~1e-8, real differences are far larger.
ZERO_STD_ATOL = 1e-6


# --------------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------------


def _rewards_tensor(rewards: torch.Tensor | Sequence[float | None]) -> torch.Tensor:
    """Rewards as a 1-D float64 tensor with NaN where a reward is missing (None)."""
    if isinstance(rewards, torch.Tensor):
        if rewards.dim() != 1:
            raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
        return rewards.detach().to(torch.float64)
    values = [math.nan if r is None else float(r) for r in rewards]
    return torch.tensor(values, dtype=torch.float64)


def _normalize_scale_rewards(scale_rewards: str | bool) -> str:
    # TRL also accepts booleans: True means "group", False means "none".
    if scale_rewards is True:
        return "group"
    if scale_rewards is False:
        return "none"
    if scale_rewards not in SCALE_REWARDS_MODES:
        raise ValueError(f"scale_rewards must be one of {SCALE_REWARDS_MODES}, got {scale_rewards!r}")
    return scale_rewards


def group_advantages(
    rewards: torch.Tensor | Sequence[float | None],
    num_generations: int,
    scale_rewards: str | bool = "group",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantages (GRPO).

    Args:
        rewards: [B*G] rewards, grouped prompt-major. None or NaN marks a missing reward.
        num_generations: G, completions per prompt.
        scale_rewards: "group" -> (r - group mean) / (group std + eps);
            "batch" -> (r - group mean) / (batch std + eps), batch std over every valid reward given;
            "none" -> r - group mean. Booleans True/False mean "group"/"none" (as in TRL).
        eps: added to the std before dividing (TRL: 1e-4).

    Returns:
        advantages: [B*G] float32 on the rewards' device (CPU for a list). Missing-reward rows and
            rows of zero-std groups are exactly 0.
        stats: plain floats: ``reward_mean`` (mean of valid rewards), ``reward_std`` (mean over groups
            of the group std, TRL's ``reward_std``), ``frac_reward_zero_std`` (fraction of groups with
            no spread among their valid rewards, including groups with fewer than 2 valid rewards),
            ``frac_reward_invalid`` (fraction of missing rewards), ``advantage_abs_mean``.

    In multi-process training pass the gathered rewards of the whole batch, so that "batch" uses the
    global std; then slice your process's rows.
    """
    mode = _normalize_scale_rewards(scale_rewards)
    if num_generations < 1:
        raise ValueError(f"num_generations must be >= 1, got {num_generations}")
    r = _rewards_tensor(rewards)
    if r.numel() == 0 or r.numel() % num_generations != 0:
        raise ValueError(
            f"number of rewards ({r.numel()}) must be a positive multiple of num_generations ({num_generations})"
        )
    if torch.isinf(r).any():
        raise ValueError("rewards contain +-inf; use None/NaN for a missing reward")
    is_valid = ~torch.isnan(r)

    num_groups = r.numel() // num_generations
    r_g = torch.where(is_valid, r, torch.zeros_like(r)).view(num_groups, num_generations)  # [B, G]
    v_g = is_valid.view(num_groups, num_generations)  # [B, G]
    n_g = v_g.sum(dim=1)  # [B] valid rewards per group

    mean_g = r_g.sum(dim=1) / n_g.clamp(min=1)  # [B]
    dev_g = torch.where(v_g, r_g - mean_g[:, None], torch.zeros_like(r_g))  # [B, G]
    std_g = (dev_g.pow(2).sum(dim=1) / (n_g - 1).clamp(min=1)).sqrt()  # [B], unbiased
    zero_std_g = (n_g < 2) | (std_g <= ZERO_STD_ATOL)  # [B]

    if mode == "group":
        adv_g = dev_g / (std_g[:, None] + eps)
    elif mode == "batch":
        r_valid = r[is_valid]
        std_batch = r_valid.std() if r_valid.numel() >= 2 else r.new_zeros(())
        adv_g = dev_g / (std_batch + eps)
    else:
        adv_g = dev_g
    # Exactly 0 (not rounding noise) where there is no learning signal.
    adv_g = torch.where(v_g & ~zero_std_g[:, None], adv_g, torch.zeros_like(adv_g))
    advantages = adv_g.reshape(-1).to(torch.float32)

    num_valid = int(is_valid.sum())
    stats = {
        "reward_mean": float(r[is_valid].mean()) if num_valid else math.nan,
        "reward_std": float(std_g.mean()),
        "frac_reward_zero_std": float(zero_std_g.double().mean()),
        "frac_reward_invalid": 1.0 - num_valid / r.numel(),
        "advantage_abs_mean": float(advantages.abs().mean()),
    }
    if num_valid < r.numel():
        logger.debug("group_advantages: %d of %d rewards missing", r.numel() - num_valid, r.numel())
    return advantages, stats


def unified_advantages(
    rewards_t2i: torch.Tensor | Sequence[float | None],
    rewards_mm2t: torch.Tensor | Sequence[float | None],
    num_generations: int,
    mode: str = "joint_reward",
    lam: float = 0.8,
    scale_rewards: str | bool = "group",
    eps: float = 1e-4,
    task_scale: str = "none",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Advantages for CoRL's unified stage 1, where row i of prompt b holds image i (t2i) and answer i (mm2t).

    Args:
        rewards_t2i: [B*G] R_t2i,i (e.g. R_cycle + R_TIM); None/NaN = missing.
        rewards_mm2t: [B*G] R_mm2t,i (e.g. R_acc + R_format); None/NaN = missing.
        num_generations: G.
        mode: "joint_reward" (paper default): R_i = R_t2i,i + lam * R_mm2t,i and one group advantage
                A_i for both the image tokens of image i and the text tokens of answer i. A row is
                missing when either of its two rewards is missing.
            "joint_advantage": A_i = A_t2i,i + lam * A_mm2t,i, each task's advantage computed on its
                own (a missing reward makes only that task's term 0); both tasks get A_i.
            "separate": adv_t2i = A_t2i, adv_mm2t = A_mm2t.
        lam: lambda, weight of the understanding reward (paper: 0.8).
        scale_rewards, eps: as in :func:`group_advantages`, applied to every group computation.
        task_scale: joint_reward only. "group": each task's rewards become within-group z-scores
            (r - group mean) / (group std + eps) before the joint sum; "none": the raw rewards (paper).

    Returns:
        adv_t2i [B*G], adv_mm2t [B*G] (float32; the same values in the joint modes) and stats with
        keys prefixed "t2i/", "mm2t/" (per-task statistics, all modes) and "joint/" (joint_reward).
    """
    if mode not in UNIFIED_MODES:
        raise ValueError(f"unified mode must be one of {UNIFIED_MODES}, got {mode!r}")
    r_t2i = _rewards_tensor(rewards_t2i)
    r_mm2t = _rewards_tensor(rewards_mm2t)
    if r_t2i.shape != r_mm2t.shape:
        raise ValueError(
            f"t2i and mm2t rewards must pair up row by row: got {r_t2i.numel()} and {r_mm2t.numel()}"
        )

    adv_t2i, stats_t2i = group_advantages(r_t2i, num_generations, scale_rewards, eps)
    adv_mm2t, stats_mm2t = group_advantages(r_mm2t, num_generations, scale_rewards, eps)
    stats = {f"t2i/{k}": v for k, v in stats_t2i.items()}
    stats.update({f"mm2t/{k}": v for k, v in stats_mm2t.items()})

    own_t2i, own_mm2t = adv_t2i, adv_mm2t
    if task_scale not in ("none", "group"):
        raise ValueError(f"task_scale must be 'none' or 'group', got {task_scale!r}")
    if mode == "joint_reward":
        part_t2i, part_mm2t = r_t2i, r_mm2t
        if task_scale == "group":  # z-scores; a zero-spread group contributes 0, a missing reward stays NaN
            part_t2i = torch.where(torch.isnan(r_t2i), r_t2i, group_advantages(r_t2i, num_generations, "group", eps)[0])
            part_mm2t = torch.where(torch.isnan(r_mm2t), r_mm2t,
                                    group_advantages(r_mm2t, num_generations, "group", eps)[0])
        joint = part_t2i + lam * part_mm2t  # NaN if either is missing -> row missing
        adv_joint, stats_joint = group_advantages(joint, num_generations, scale_rewards, eps)
        stats.update({f"joint/{k}": v for k, v in stats_joint.items()})
        adv_t2i, adv_mm2t = adv_joint, adv_joint.clone()
        terms = (part_t2i, lam * part_mm2t)  # what the image tokens' advantage is made of
    elif mode == "joint_advantage":
        adv_joint = adv_t2i + lam * adv_mm2t
        adv_t2i, adv_mm2t = adv_joint, adv_joint.clone()
        terms = (own_t2i, lam * own_mm2t)
    else:
        terms = (r_t2i, torch.zeros_like(r_mm2t))
    stats.update(advantage_attribution(r_t2i, r_mm2t, adv_t2i, adv_mm2t, terms, num_generations))
    return adv_t2i, adv_mm2t, stats


def _within_group(values: torch.Tensor, valid: torch.Tensor, num_generations: int) -> torch.Tensor:
    """[B, G] deviations from each group's mean over its valid rows (0 at invalid rows)."""
    v = torch.where(valid, values, torch.zeros_like(values)).view(-1, num_generations).double()
    m = valid.view(-1, num_generations)
    mean = v.sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(m, v - mean, torch.zeros_like(v))


def _pooled_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation of two [B, G] sets of within-group deviations, pooled over groups (NaN without spread)."""
    denominator = (a.pow(2).sum() * b.pow(2).sum()).sqrt()
    return float((a * b).sum() / denominator) if denominator > 0 else math.nan


def advantage_attribution(
    r_t2i: torch.Tensor, r_mm2t: torch.Tensor, adv_t2i: torch.Tensor, adv_mm2t: torch.Tensor,
    terms: tuple[torch.Tensor, torch.Tensor], num_generations: int,
) -> dict[str, float]:
    """What the unified stage's advantages are made of, measured within groups (rows valid in both tasks).

    terms: ([B*G], [B*G]) the t2i and mm2t parts whose sum the image tokens' advantage normalizes
        (joint_reward: R_t2i and lam * R_mm2t; joint_advantage: A_t2i and lam * A_mm2t; separate: R_t2i, 0).
    Returns (plain floats):
        attrib/t2i_share: the share of the within-group variance of that sum due to the t2i part,
            cov(x_t2i, x_t2i + x_mm2t) / var(x_t2i + x_mm2t) per group, averaged over groups with spread
            (every group weighs the same, as its normalized advantages do); attrib/mm2t_share = 1 - it.
        attrib/t2i_spread, attrib/mm2t_spread: mean within-group std of R_t2i and R_mm2t.
        attrib/corr_t2i_adv: within-group correlation of R_t2i with the image tokens' advantage;
        attrib/corr_mm2t_adv: of R_mm2t with the answer tokens' advantage.
    """
    valid = ~torch.isnan(r_t2i) & ~torch.isnan(r_mm2t)
    d_t, d_m = _within_group(r_t2i, valid, num_generations), _within_group(r_mm2t, valid, num_generations)
    x_t, x_m = (_within_group(t, valid, num_generations) for t in terms)
    total = x_t + x_m
    var_total = total.pow(2).sum(dim=1)  # [B]
    spread = var_total > 1e-12
    shares = (x_t * total).sum(dim=1)[spread] / var_total[spread]
    n = valid.view(-1, num_generations).sum(dim=1).clamp(min=2) - 1  # [B] unbiased std denominators
    t2i_share = float(shares.mean()) if shares.numel() else math.nan
    return {
        "attrib/t2i_share": t2i_share,
        "attrib/mm2t_share": 1.0 - t2i_share if shares.numel() else math.nan,
        "attrib/t2i_spread": float((d_t.pow(2).sum(dim=1) / n).sqrt().mean()),
        "attrib/mm2t_spread": float((d_m.pow(2).sum(dim=1) / n).sqrt().mean()),
        "attrib/corr_t2i_adv": _pooled_corr(d_t, _within_group(adv_t2i, valid, num_generations)),
        "attrib/corr_mm2t_adv": _pooled_corr(d_m, _within_group(adv_mm2t, valid, num_generations)),
    }


# --------------------------------------------------------------------------------------------------
# KL and masked reductions
# --------------------------------------------------------------------------------------------------


def k3_kl(per_token_logps: torch.Tensor, ref_per_token_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref): exp(q) - q - 1 with q = ref_logp - logp.

    Non-negative, unbiased for tokens sampled from pi_theta, 0 where the log-probs agree. Same shape
    as the inputs ([N, T]); gradient flows to ``per_token_logps`` only (the reference is detached).
    """
    q = ref_per_token_logps.detach() - per_token_logps
    return torch.exp(q) - q - 1.0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is true; 0 (not NaN) for an empty mask."""
    mask_f = mask.to(values.dtype)
    return (values * mask_f).sum() / mask_f.sum().clamp(min=1.0)


# --------------------------------------------------------------------------------------------------
# Policy loss
# --------------------------------------------------------------------------------------------------


def _check_loss_inputs(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor | None,
    ref_per_token_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    loss_type: str,
    epsilon: float,
    epsilon_high: float,
    beta: float,
) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if per_token_logps.dim() != 2:
        raise ValueError(f"per_token_logps must be [N, T], got shape {tuple(per_token_logps.shape)}")
    for name, t in (
        ("completion_mask", completion_mask),
        ("old_per_token_logps", old_per_token_logps),
        ("ref_per_token_logps", ref_per_token_logps),
    ):
        if t is not None and t.shape != per_token_logps.shape:
            raise ValueError(
                f"{name} shape {tuple(t.shape)} != per_token_logps shape {tuple(per_token_logps.shape)}"
            )
    if advantages.shape != per_token_logps.shape[:1]:
        raise ValueError(
            f"advantages must be [N] = [{per_token_logps.shape[0]}], got shape {tuple(advantages.shape)}"
        )
    if not torch.isfinite(advantages).all():
        raise ValueError("advantages contain NaN or inf; refusing to propagate them into the loss")
    if epsilon < 0 or epsilon_high < 0:
        raise ValueError(f"epsilon and epsilon_high must be >= 0, got {epsilon} and {epsilon_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta != 0.0 and ref_per_token_logps is None:
        raise ValueError("beta != 0 needs ref_per_token_logps (the KL term's reference log-probs)")


def policy_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    *,
    loss_type: str = "grpo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_per_token_logps: torch.Tensor | None = None,
    max_completion_length: int | None = None,
    num_items_in_batch: float | torch.Tensor | None = None,
    num_processes: int = 1,
    gradient_accumulation_steps: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO clipped surrogate with optional k3 KL, aggregated over tokens as TRL's ``loss_type``.

    Per token (i, t) with valid mask m_it:
        ratio = exp(logp - old_logp)    (old = logp.detach() when None: num_iterations == 1, ratio == 1
                                         but the gradient is the policy gradient -A * dlogp)
        l_it  = -min(ratio * A_i, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A_i) + beta * k3_it
        k3_it = exp(q) - q - 1,  q = ref_logp - logp      (only when beta != 0)

    Aggregations (S = sum_it m_it * l_it, n_i = sum_t m_it):
        "grpo":    mean over non-empty rows of (sum_t m_it * l_it / n_i). TRL divides by all N rows;
                   here all-masked rows are left out of the mean so they contribute nothing.
        "bnpo":    S / sum_it m_it, the token mean of this micro-batch (local normaliser).
        "dr_grpo": S / (N * max_completion_length), a constant normaliser (Dr. GRPO; empty rows count
                   in N, so the normaliser never depends on the sampled lengths).
        "dapo":    S / (num_items_in_batch / num_processes): the token mean of the *whole generation
                   batch*. ``num_items_in_batch`` is the number of valid completion tokens summed
                   over every micro-batch of the optimizer step and every process; DDP averages
                   gradients over processes, hence the division by ``num_processes``. When it is
                   None the local token count is used (then dapo == bnpo).
    bnpo vs dapo (as in TRL): with one micro-batch on one process they are equal. With gradient
    accumulation or several processes bnpo is a mean of per-micro-batch token means (a token in a
    short micro-batch weighs more), dapo is the exact token mean over the global batch.

    Gradient accumulation: the locally normalised losses (grpo, bnpo, dr_grpo, and dapo without
    ``num_items_in_batch``) are divided by ``gradient_accumulation_steps`` so that summing the
    micro-batch gradients averages them, as TRL does; dapo with ``num_items_in_batch`` is already
    normalised globally and is not divided.

    Args:
        per_token_logps: [N, T] log pi_theta of the sampled tokens (with grad). Any dtype; the math
            runs in float32.
        old_per_token_logps: [N, T] log pi_old from the sampling policy, or None (on-policy).
        advantages: [N] one advantage per row (broadcast over its tokens). NaN/inf -> ValueError.
        completion_mask: [N, T] bool/0-1; 1 marks a completion token that counts.
        loss_type, epsilon, epsilon_high (None -> epsilon), beta: as in TRL's GRPOConfig.
        ref_per_token_logps: [N, T] log pi_ref; required when beta != 0 (also used for the "kl"
            metric when given with beta == 0, without entering the loss).
        max_completion_length: the normaliser of dr_grpo (required for it).
        num_items_in_batch, num_processes: the global normaliser of dapo (see above).
        gradient_accumulation_steps: micro-batches per optimizer step (see above).

    Returns:
        loss: scalar with grad. Masked positions contribute exactly nothing: their log-probs are
            replaced before any arithmetic, so -inf/NaN padding cannot leak NaN into values or grads.
        metrics: detached 0-dim tensors (sync with ``float()`` when logging), token means over valid
            tokens: ``clip_ratio/low_mean`` (ratio < 1 - epsilon and A < 0: the lower clip is
            active), ``clip_ratio/high_mean`` (ratio > 1 + epsilon_high and A > 0),
            ``clip_ratio/region_mean`` (either), ``ratio_mean``, ``kl`` (when a reference is given),
            and ``num_tokens`` (valid tokens in this micro-batch).
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    _check_loss_inputs(
        per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, completion_mask,
        loss_type, epsilon, epsilon_high, beta,
    )
    mask = completion_mask.to(torch.bool)  # [N, T]
    mask_f = mask.to(torch.float32)  # [N, T]
    num_rows = per_token_logps.shape[0]

    # Replace masked positions before any arithmetic: padded log-probs may be -inf or NaN, and
    # 0 * NaN (or a NaN in an unselected torch.where branch's backward) would poison loss and grads.
    zero = per_token_logps.new_zeros((), dtype=torch.float32)
    logps = torch.where(mask, per_token_logps.float(), zero)  # [N, T]
    if old_per_token_logps is None:
        old_logps = logps.detach()
    else:
        old_logps = torch.where(mask, old_per_token_logps.detach().float(), zero)
    adv = advantages.detach().float()[:, None]  # [N, 1]

    ratio = torch.exp(logps - old_logps)  # [N, T]
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
    per_token_loss = -torch.min(ratio * adv, clipped_ratio * adv)  # [N, T]

    per_token_kl = None
    if ref_per_token_logps is not None:
        ref_logps = torch.where(mask, ref_per_token_logps.detach().float(), zero)
        per_token_kl = k3_kl(logps, ref_logps)  # [N, T]
        if beta != 0.0:
            per_token_loss = per_token_loss + beta * per_token_kl

    masked_loss = per_token_loss * mask_f  # [N, T], exactly 0 at masked positions
    tokens_per_row = mask_f.sum(dim=1)  # [N]
    divide_by_accumulation = True
    if loss_type == "grpo":
        row_means = masked_loss.sum(dim=1) / tokens_per_row.clamp(min=1.0)  # [N]
        non_empty = (tokens_per_row > 0).to(torch.float32)
        loss = (row_means * non_empty).sum() / non_empty.sum().clamp(min=1.0)
    elif loss_type == "bnpo":
        loss = masked_loss.sum() / mask_f.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if max_completion_length is None or max_completion_length <= 0:
            raise ValueError("loss_type 'dr_grpo' needs a positive max_completion_length")
        if per_token_logps.shape[1] > max_completion_length and bool(tokens_per_row.max() > max_completion_length):
            raise ValueError(
                f"a row has more valid tokens than max_completion_length={max_completion_length}"
            )
        loss = masked_loss.sum() / (num_rows * max_completion_length)
    else:  # dapo
        if num_items_in_batch is None:
            loss = masked_loss.sum() / mask_f.sum().clamp(min=1.0)
        else:
            if num_processes < 1:
                raise ValueError(f"num_processes must be >= 1, got {num_processes}")
            normalizer = torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=logps.device)
            loss = masked_loss.sum() / (normalizer / num_processes).clamp(min=1.0)
            divide_by_accumulation = False
    if gradient_accumulation_steps < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {gradient_accumulation_steps}")
    if divide_by_accumulation and gradient_accumulation_steps > 1:
        loss = loss / gradient_accumulation_steps

    with torch.no_grad():
        is_low_clipped = (ratio < 1.0 - epsilon) & (adv < 0)  # [N, T]
        is_high_clipped = (ratio > 1.0 + epsilon_high) & (adv > 0)  # [N, T]
        metrics = {
            "clip_ratio/low_mean": masked_mean(is_low_clipped.float(), mask),
            "clip_ratio/high_mean": masked_mean(is_high_clipped.float(), mask),
            "clip_ratio/region_mean": masked_mean((is_low_clipped | is_high_clipped).float(), mask),
            "ratio_mean": masked_mean(ratio, mask),
            "num_tokens": mask_f.sum(),
        }
        if per_token_kl is not None:
            metrics["kl"] = masked_mean(per_token_kl, mask)
    return loss, metrics


def chunk_weight(
    loss_type: str, chunk_mask: torch.Tensor, rows_mask: torch.Tensor, global_normalizer: bool
) -> float:
    """The factor w_c that makes sum_c w_c * policy_loss(chunk c) equal policy_loss(all rows), when the
    rows of a micro-batch are scored in chunks (each chunk's loss normalised on its own).

    chunk_mask [n_c, T] and rows_mask [N, T] are the completion masks of the chunk and of all N rows.
        grpo:    non-empty rows of the chunk / non-empty rows of all (a mean over rows)
        bnpo:    valid tokens of the chunk / valid tokens of all (a token mean); dapo without a global
                 normaliser is bnpo
        dr_grpo: n_c / N (a constant per-row normaliser)
        dapo with num_items_in_batch (global_normalizer): 1, every chunk already shares the normaliser
    """
    if loss_type == "grpo":
        part, whole = (chunk_mask.sum(dim=1) > 0).sum(), (rows_mask.sum(dim=1) > 0).sum()
    elif loss_type == "bnpo" or (loss_type == "dapo" and not global_normalizer):
        part, whole = chunk_mask.sum(), rows_mask.sum()
    elif loss_type == "dr_grpo":
        part, whole = chunk_mask.shape[0], rows_mask.shape[0]
    elif loss_type == "dapo":
        return 1.0
    else:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    return float(part) / max(float(whole), 1.0)
