"""Tensor math on logits and masks shared by scoring, matching and rollouts (no model, no processor)."""

from __future__ import annotations

import torch


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w * (cond - uncond). [..., V] -> [..., V].

    w = 1 gives the conditional logits; Janus-Pro samples with w = 5.
    """
    return uncond + weight * (cond - uncond)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. [R, L] -> [R, L] long.

    Pads get position 0 (they are masked out anyway). Used identically by rollouts and scoring so
    that a row's log-probs do not depend on how much padding its batch needed.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool keep-mask (True = attend) -> 0 where attended, the dtype's minimum elsewhere: the form eager
    attention adds to its scores (transformers' eager mask). Same shape as `keep`."""
    return torch.where(keep, torch.zeros((), dtype=dtype, device=keep.device), torch.finfo(dtype).min)


def unconditional_prompt(prompt_ids: torch.Tensor, *, bos_id: int, boi_id: int, pad_id: int) -> torch.Tensor:
    """The CFG unconditional prompt: every token except BOS and the image-start tag becomes pad.

    Matches transformers' `JanusForConditionalGeneration.generate` (and Janus-Pro's reference code,
    which pads everything between BOS and the final image-start tag). The attention mask stays the
    conditional row's. [R, P] -> [R, P].
    """
    keep = (prompt_ids == bos_id) | (prompt_ids == boi_id)
    return torch.where(keep, prompt_ids, torch.full_like(prompt_ids, pad_id))


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits)[..., index] without materializing the full log-softmax.

    logits [..., V] (any float dtype; computed in float32), index [...] long -> [...] float32.
    """
    logits = logits.float()
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim, in float32 (-inf logits allowed). [..., V] -> [...]."""
    probs = torch.softmax(logits.float(), dim=-1)
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def blocked_token_mask(
    token_ids: tuple[int, ...], vocab_size: int, device: torch.device | str
) -> torch.Tensor:
    """[V] bool, True at the listed ids (build once, pass to `suppress_tokens` in a loop)."""
    blocked = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    blocked[list(token_ids)] = True
    return blocked


def suppress_tokens(
    logits: torch.Tensor, token_ids: tuple[int, ...], *, blocked: torch.Tensor | None = None
) -> torch.Tensor:
    """Give the listed vocabulary entries probability 0: [..., V] -> [..., V] (a copy).

    blocked: the [V] bool mask of `token_ids` from `blocked_token_mask`, if already built.
    """
    if not token_ids:
        return logits
    if blocked is None:
        blocked = blocked_token_mask(token_ids, logits.shape[-1], logits.device)
    return logits.masked_fill(blocked, float("-inf"))
