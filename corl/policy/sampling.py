"""Pure tensor math shared by rollouts and scoring (no model, no processor)."""

from __future__ import annotations

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + w * (cond - uncond). [..., V] -> [..., V].

    w = 1 gives the conditional logits; Janus-Pro samples with w = 5.
    """
    return uncond + weight * (cond - uncond)


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


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. [R, L] -> [R, L] long.

    Pads get position 0 (they are masked out anyway). Used identically by rollouts and scoring so
    that a row's log-probs do not depend on how much padding its batch needed.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


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
