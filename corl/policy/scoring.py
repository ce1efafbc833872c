"""Per-token log-probabilities of sampled tokens under the policy: differentiable, one full forward.

Conventions (the same as the rollouts, so a sampled token is scored under the distribution it was
drawn from, up to top-k/top-p truncation which GRPO ignores as usual):
- left-padded prompts; position ids count from each row's first real token; the 2-D attention mask is
  always passed (it also keeps transformers from mistaking left-padding positions for packed sequences);
- the hidden state at position t predicts the token at t + 1. For a prompt of length P, the states at
  P - 1 ... P + N - 2 predict image codes 0 ... N - 1 (or completion tokens 0 ... C - 1). The last
  sampled token is never fed in;
- image codes are fed back through the generation embeddings + generation aligner
  (`prepare_embeddings_for_image_generation`) and scored with the generation head; text tokens go
  through the normal embeddings and are scored with the text head (lm_head);
- logits are divided by the sampling temperature before the log-softmax (TRL's GRPO does the same);
- text logits of the image placeholder are -inf, as in the text rollout (it can never be an answer token).

Image tokens sampled with classifier-free guidance can be scored two ways; the choice is explicit
(`cfg_weight`) and logged once per setting, since silently mixing them is a known pitfall:
- cfg_weight=None: the conditional distribution alone, log_softmax(cond / T);
- cfg_weight=w: the distribution the rollout sampled from, log_softmax((uncond + w (cond - uncond)) / T),
  with the unconditional rows built exactly as in the rollout; gradients flow through both branches.

Understanding rows that share prompt and image (a GRPO group's answers) can be scored in one packed sequence
per group, the prompt run once (`share_prompts`; `corl.policy.shared_prompts`): the same states up to float
rounding.

Memory: the head (and log-softmax) runs over chunks of positions when the whole [rows, positions, vocab]
float32 logits would exceed `logits_chunk_mb` MiB (`train.logits_chunk_mb`), with activation checkpointing per chunk under autograd,
so the largest logits tensor alive is one chunk's. Entropies (`return_entropy`) are metrics and carry no
gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint
from transformers import JanusForConditionalGeneration

from corl.config import LOGITS_CHUNK_MB
from corl.policy.logits import (
    cfg_logits,
    entropy_from_logits,
    positions_from_mask,
    selective_log_softmax,
    suppress_tokens,
    unconditional_prompt,
)
from corl.policy.policy import JanusPolicy
from corl.policy.shared_prompts import (
    PACKABLE_ATTENTION,
    attention_mask_for,
    consecutive_prompt_groups,
    pack_embeddings,
    packed_layout,
    unpack_scoring_states,
)

logger = logging.getLogger(__name__)
_logged_settings: set[tuple] = set()


def _log_once(*setting) -> None:
    if setting not in _logged_settings:
        _logged_settings.add(setting)
        logger.info(*setting)


def understanding_embeddings(
    model: JanusForConditionalGeneration, input_ids: torch.Tensor, pixel_values: torch.Tensor
) -> torch.Tensor:
    """Token embeddings with the understanding image features scattered into the placeholders.

    input_ids [R, L] with N placeholders per image, pixel_values [R_img, 3, H, W] (one image per
    placeholder run, in order) -> [R, L, D]. Uses transformers' own `get_image_features` and
    `get_placeholder_mask`, which checks that placeholders and features match in number.
    """
    embeds = model.get_input_embeddings()(input_ids)  # [R, L, D]
    features = model.model.get_image_features(pixel_values.to(embeds.dtype), return_dict=True).pooler_output
    features = features.reshape(-1, embeds.shape[-1]).to(embeds.dtype)  # [R_img * N, D]
    placeholder = model.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
    return embeds.masked_scatter(placeholder, features)


def _score(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, return_entropy: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """logits [R, n, V] -> log-prob of targets [R, n] float32 (and the entropy [R, n], without grad)."""
    logits = logits.float() / temperature
    logps = selective_log_softmax(logits, targets)
    if return_entropy:
        with torch.no_grad():
            return logps, entropy_from_logits(logits)
    return logps


def _chunk_positions(rows: int, positions: int, vocab: int, chunk_mb: int) -> int:
    """Positions per head chunk so that one chunk's float32 logits [rows, chunk, vocab] stay under
    chunk_mb MiB (Janus-Pro-1B's text head: 16 rows x 512 tokens x 102400 = 3.4 GB in one piece)."""
    per_position = rows * vocab * 4
    return max(1, min(positions, chunk_mb * 2**20 // max(1, per_position)))


def _chunked_score(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,  # [b, n, D] LLM states (b = 2R with CFG: the head combines row pairs)
    targets: torch.Tensor,  # [R, n]
    temperature: float,
    return_entropy: bool,
    vocab: int,
    chunk_mb: int,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Head + log-softmax over chunks of positions -> [R, n] (+ entropy [R, n]).

    One chunk (everything at once) when the logits fit in chunk_mb MiB. Otherwise each
    chunk's head runs under activation checkpointing when gradients are needed: autograd keeps only the
    [b, n, D] states and recomputes one chunk's logits during backward, instead of holding
    [R, n, V] float32 logits (plus their softmax for the log-sum-exp backward) for the whole sequence.
    Entropy is a metric: computed without grad.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    chunk = _chunk_positions(hidden.shape[0], hidden.shape[1], vocab, chunk_mb)
    if chunk >= hidden.shape[1]:
        return _score(head(hidden), targets, temperature, return_entropy)

    def score_chunk(states: torch.Tensor, chunk_targets: torch.Tensor):
        return _score(head(states), chunk_targets, temperature, return_entropy)

    checkpointed = torch.is_grad_enabled() and hidden.requires_grad
    pieces = []
    for states, chunk_targets in zip(hidden.split(chunk, dim=1), targets.split(chunk, dim=1), strict=True):
        if checkpointed:
            pieces.append(checkpoint(score_chunk, states, chunk_targets, use_reentrant=False))
        else:
            pieces.append(score_chunk(states, chunk_targets))
    if return_entropy:
        return torch.cat([p[0] for p in pieces], dim=1), torch.cat([p[1] for p in pieces], dim=1)
    return torch.cat(pieces, dim=1)


def _image_hidden(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,  # [R, P] left padded, ending with the image-start tag
    prompt_mask: torch.Tensor,  # [R, P]
    image_tokens: torch.Tensor,  # [R, N]
    guided: bool,
) -> torch.Tensor:
    """LLM states that predict each image code -> [b, N, D]; b = 2R (conditional rows, then
    unconditional) when guided, else R. State t predicts code t."""
    model = policy.model
    language_model = model.model.language_model
    rows, prompt_len = prompt_ids.shape
    if image_tokens.shape[0] != rows:
        raise ValueError(f"{image_tokens.shape[0]} image rows for {rows} prompt rows")
    if guided:
        uncond_ids = unconditional_prompt(
            prompt_ids, bos_id=policy.tokens.bos_id, boi_id=policy.tokens.boi_id, pad_id=policy.tokens.pad_id
        )
        ids = torch.cat([prompt_ids, uncond_ids])  # [2R, P]
        mask = torch.cat([prompt_mask, prompt_mask])
        codes = torch.cat([image_tokens, image_tokens])  # [2R, N]
    else:
        ids, mask, codes = prompt_ids, prompt_mask, image_tokens
    num_tokens = codes.shape[1]
    embeds = torch.cat(
        [
            language_model.get_input_embeddings()(ids),  # [b, P, D]
            model.prepare_embeddings_for_image_generation(codes[:, :-1]),  # [b, N - 1, D]
        ],
        dim=1,
    )  # [b, P + N - 1, D]
    full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], num_tokens - 1)], dim=1)
    hidden = language_model(
        inputs_embeds=embeds,
        attention_mask=full_mask,
        position_ids=positions_from_mask(full_mask),
        use_cache=False,
    ).last_hidden_state  # [b, P + N - 1, D]
    return hidden[:, prompt_len - 1 :]  # [b, N, D]: state t predicts code t+1


def _image_head(policy: JanusPolicy, hidden: torch.Tensor, cfg_weight: float | None) -> torch.Tensor:
    """[b, n, D] states -> [R, n, V_img] float32 logits, CFG-combined when cfg_weight is a weight."""
    logits = policy.model.model.generation_head(hidden).float()  # [b, n, V_img]
    if cfg_weight is not None and cfg_weight != 1.0:
        rows = logits.shape[0] // 2
        logits = cfg_logits(logits[:rows], logits[rows:], float(cfg_weight))  # [R, n, V_img]
    return logits


def image_token_logits(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,  # [R, P] left padded, ending with the image-start tag
    prompt_mask: torch.Tensor,  # [R, P]
    image_tokens: torch.Tensor,  # [R, N]
    cfg_weight: float | None,
) -> torch.Tensor:
    """Generation-head logits that predict each image code -> [R, N, V_img] float32 (before temperature).

    cfg_weight None (or 1.0): conditional logits; a float w: uncond + w * (cond - uncond).
    """
    guided = cfg_weight is not None and cfg_weight != 1.0
    hidden = _image_hidden(policy, prompt_ids, prompt_mask, image_tokens, guided)
    return _image_head(policy, hidden, cfg_weight)


def image_token_logps(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,  # [R, P] left padded, ending with the image-start tag
    prompt_mask: torch.Tensor,  # [R, P]
    image_tokens: torch.Tensor,  # [R, N]
    cfg_weight: float | None,
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    logits_chunk_mb: int = LOGITS_CHUNK_MB,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every image code -> [R, N] float32 (and per-token entropy [R, N] if asked).

    cfg_weight None (or 1.0): conditional only; a float w: CFG-guided. See the module docstring.
    The head runs in chunks of positions when the full logits would exceed logits_chunk_mb MiB.
    """
    guided = cfg_weight is not None and cfg_weight != 1.0
    _log_once(
        "image log-probs: %s, temperature %s",
        f"CFG-guided w={cfg_weight}" if guided else "conditional only",
        temperature,
    )
    hidden = _image_hidden(policy, prompt_ids, prompt_mask, image_tokens, guided)  # [b, N, D]
    vocab = policy.image_vocab_size
    return _chunked_score(
        lambda states: _image_head(policy, states, cfg_weight),
        hidden,
        image_tokens,
        temperature,
        return_entropy,
        vocab,
        logits_chunk_mb,
    )


def _text_hidden(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,  # [R, P] left padded, with image placeholders
    prompt_mask: torch.Tensor,  # [R, P]
    pixel_values: torch.Tensor,  # [R, 3, H, W] one image per row
    completion_ids: torch.Tensor,  # [R, C]
    completion_mask: torch.Tensor,  # [R, C]
    share_prompts: bool = False,
) -> torch.Tensor:
    """LLM states that predict each completion token -> [R, C, D] (state t predicts token t).

    Rows that share their prompt and image with the row before them (a group's G answers) are scored in one
    packed sequence per group (`corl.policy.shared_prompts`) when `share_prompts` is on and the attention
    implementation takes a 4-D mask; otherwise each row runs its own prompt."""
    model = policy.model
    language_model = model.model.language_model
    prompt_len = prompt_ids.shape[1]
    if share_prompts:
        packed = _packed_text_hidden(policy, prompt_ids, prompt_mask, pixel_values, completion_ids, completion_mask)
        if packed is not None:
            return packed
    ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [R, P + C]
    mask = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    embeds = understanding_embeddings(model, ids, pixel_values.to(policy.dtype))  # [R, P + C, D]
    hidden = language_model(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False
    ).last_hidden_state  # [R, P + C, D]
    return hidden[:, prompt_len - 1 : -1]  # [R, C, D]: state t predicts token t+1


def _packed_text_hidden(
    policy: JanusPolicy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, pixel_values: torch.Tensor,
    completion_ids: torch.Tensor, completion_mask: torch.Tensor,
) -> torch.Tensor | None:
    """`_text_hidden` with each run of rows that share prompt and image packed into one sequence -> [R, C, D];
    None when packing does not apply (an attention implementation without 4-D masks, logged once; no two
    rows sharing a prompt; no completion tokens)."""
    model = policy.model
    language_model = model.model.language_model
    attention = language_model.config._attn_implementation
    if attention not in PACKABLE_ATTENTION:
        _log_once("text log-probs: %s attention takes no 4-D mask, so every row runs its own prompt", attention)
        return None
    if completion_ids.shape[1] == 0:
        return None
    groups = consecutive_prompt_groups(prompt_ids, prompt_mask, pixel_values)
    if groups.num_groups == prompt_ids.shape[0]:  # no two rows share a prompt
        return None
    layout = packed_layout(groups, prompt_mask, completion_mask)
    prompt_embeds = understanding_embeddings(
        model, prompt_ids[groups.first_row], pixel_values[groups.first_row].to(policy.dtype)
    )  # [U, P, D]
    embeds = pack_embeddings(layout, prompt_embeds, language_model.get_input_embeddings()(completion_ids))
    hidden = language_model(
        inputs_embeds=embeds, attention_mask=attention_mask_for(layout, attention, embeds.dtype),
        position_ids=layout.positions, use_cache=False,
    ).last_hidden_state  # [U, L, D]
    return unpack_scoring_states(layout, hidden)


def _text_head(policy: JanusPolicy, hidden: torch.Tensor) -> torch.Tensor:
    """[R, c, D] states -> [R, c, V] text logits (model dtype), image placeholder at -inf as in the rollout."""
    return suppress_tokens(policy.model.lm_head(hidden), policy.tokens.not_in_text)


def text_token_logits(
    policy: JanusPolicy, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, pixel_values: torch.Tensor,
    completion_ids: torch.Tensor, completion_mask: torch.Tensor, *, share_prompts: bool = False,
) -> torch.Tensor:
    """Text-head logits that predict each completion token -> [R, C, V] (model dtype, before temperature).
    Inputs, their shapes and `share_prompts` as in `text_token_logps`."""
    hidden = _text_hidden(policy, prompt_ids, prompt_mask, pixel_values, completion_ids, completion_mask,
                          share_prompts)
    return _text_head(policy, hidden)


def text_token_logps(
    policy: JanusPolicy,
    prompt_ids: torch.Tensor,  # [R, P] left padded, with image placeholders
    prompt_mask: torch.Tensor,  # [R, P]
    pixel_values: torch.Tensor,  # [R, 3, H, W] one image per row
    completion_ids: torch.Tensor,  # [R, C]
    completion_mask: torch.Tensor,  # [R, C]
    *,
    temperature: float = 1.0,
    return_entropy: bool = False,
    logits_chunk_mb: int = LOGITS_CHUNK_MB,
    share_prompts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every completion token -> [R, C] float32 (and entropy [R, C] if asked).

    Positions where completion_mask is 0 get finite but meaningless values; mask them in the loss.
    The head runs in chunks of positions when the full logits would exceed logits_chunk_mb MiB.
    share_prompts: consecutive rows with the same prompt and image (a GRPO group) are scored in one packed
    sequence whose prompt runs once (`corl.policy.shared_prompts`); the same values up to float rounding.
    """
    hidden = _text_hidden(policy, prompt_ids, prompt_mask, pixel_values, completion_ids, completion_mask,
                          share_prompts)
    return _chunked_score(
        lambda states: _text_head(policy, states),
        hidden,
        completion_ids,
        temperature,
        return_entropy,
        policy.model.lm_head.out_features,
        logits_chunk_mb,
    )
