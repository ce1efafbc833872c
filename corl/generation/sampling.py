"""Drawing tokens from logits: filters, temperature, multinomial and its noise form (no model)."""

from __future__ import annotations

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering with transformers' warpers; removed entries become -inf.

    logits: [R, V]. top_k None/0 and top_p None/1.0 leave the logits unchanged.
    """
    if top_k:
        logits = TopKLogitsWarper(top_k=int(top_k))(None, logits)
    if top_p is not None and top_p < 1.0:
        logits = TopPLogitsWarper(top_p=float(top_p))(None, logits)
    return logits


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float,
    greedy: bool = False,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row from logits [R, V] -> [R] long. Greedy = argmax (temperature ignored)."""
    if greedy:
        return logits.argmax(dim=-1)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def sampling_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution a token is drawn from: softmax of the filtered logits / temperature, float32.
    [R, V] -> [R, V]."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature} (use greedy)")
    return torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)


def exponential_noise(
    rows: int, vocab: int, *, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """[rows, vocab] float32 draws from Exp(1), for `sample_with_noise`."""
    return torch.empty(rows, vocab, device=device).exponential_(1.0, generator=generator)


def sample_with_noise(
    logits: torch.Tensor,
    noise: torch.Tensor | None,
    *,
    temperature: float,
    greedy: bool = False,
    top_k: int | None = None,
) -> torch.Tensor:
    """One token per row from logits [R, V] and noise [R, V] ~ Exp(1) -> [R] long: argmax(p / noise).

    Why: this is how torch.multinomial draws one sample (the Gumbel-max trick in its exponential form;
    aten's multinomial fills an Exp(1) tensor from the generator and takes argmax(p / q)), so with
    noise = `exponential_noise(...)` from the same generator the token equals
    `sample_next(..., generator=...)`'s, while the math is plain tensor ops that run inside a compiled
    decode step (no host synchronisation, no eager op per step). Greedy = argmax (noise unused, may be
    None). A row whose probabilities are not finite (NaN/inf logits) gets -1 instead of a token: inside
    a compiled step nothing can raise, so the caller checks the drawn tokens.
    """
    if greedy:
        return logits.argmax(dim=-1)
    probs = sampling_probs(logits, temperature, top_k)  # [R, V]
    token = (probs / noise).argmax(dim=-1)
    return torch.where(torch.isfinite(probs).all(dim=-1), token, -1)


def completion_mask_after_eos(completion_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[R, C] ids -> [R, C] long mask: 1 up to and including the first EOS, 0 after; all 1 without EOS."""
    is_eos = completion_ids == eos_id
    length = completion_ids.shape[1]
    first_eos = torch.where(
        is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(is_eos[:, 0], length, dtype=torch.long)
    )
    steps = torch.arange(length, device=completion_ids.device)[None, :]
    return (steps <= first_eos[:, None]).long()
