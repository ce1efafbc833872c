"""Hidden states for text-image matching (R_TIM): one understanding pass over (image, text).

Image positions are the placeholder tokens (`input_ids == image_token_id`); text positions are the
tokens of the text itself, located through the tokenizer's character offsets (template words, role
tags, the answer-format instruction and special tokens excluded). Nothing depends on where a template
puts things, so any chat template, either order of image and text, a system prompt, and left padding
all work. States are returned padded with masks, in float32.

Choice taken: states of the last layer after the final norm by default (`layer=-1`); `layer=k` takes
transformers' `hidden_states[k]` instead (0 = input embeddings, k = output of decoder layer k; with
transformers 5 the last entry is the final-norm output, so -1 means the same either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from corl.policy.logits import positions_from_mask
from corl.policy.policy import JanusPolicy
from corl.policy.prompts import PromptStyle, encode_understanding
from corl.policy.scoring import understanding_embeddings


@dataclass
class MatchingStates:
    """Hidden states of an understanding pass over (image, text), split by masks."""

    image_states: torch.Tensor  # [M, Li, D] float32, states at the image placeholder positions
    image_mask: torch.Tensor  # [M, Li] bool
    text_states: torch.Tensor  # [M, Lt, D] float32, states at the text's own tokens (no template)
    text_mask: torch.Tensor  # [M, Lt] bool
    layer: int = -1  # which hidden layer; -1 = final (after the last norm)


def gather_masked(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the masked positions of each row to the front, in order.

    states [M, L, D], mask [M, L] bool -> packed [M, K, D] (zeros where unused), packed_mask [M, K] bool,
    K = the largest count of masked positions in a row.
    """
    counts = mask.sum(dim=1)  # [M]
    width = int(counts.max()) if counts.numel() else 0
    # A stable sort of (not mask) puts the masked positions first, keeping their order.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]  # [M, K]
    packed = states.gather(1, order[..., None].expand(-1, -1, states.shape[-1]))  # [M, K, D]
    packed_mask = torch.arange(width, device=mask.device)[None, :] < counts[:, None]  # [M, K]
    return packed * packed_mask[..., None], packed_mask


@torch.no_grad()
def matching_states(
    policy: JanusPolicy,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    *,
    layer: int = -1,
    style: PromptStyle | None = None,
    batch_size: int | None = None,
) -> MatchingStates:
    """Understanding-pass hidden states at image positions and at the text's own tokens.

    images[i] is paired with texts[i]. style: prompt wording (its answer_format is ignored; the text
    is the whole user text); default: the policy's system prompt and image order.
    batch_size: rows per forward pass (None: all at once).
    """
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images for {len(texts)} texts")
    if any(not text.strip() for text in texts):
        raise ValueError("matching_states needs a non-empty text for every image")
    style = style or policy.style
    style = PromptStyle(answer_format=None, system_prompt=style.system_prompt, image_first=style.image_first)
    step = batch_size or len(texts)
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(texts), step):
        parts.append(
            _matching_batch(policy, images[start : start + step], texts[start : start + step], layer, style)
        )
    return MatchingStates(
        image_states=_cat_padded([p[0] for p in parts]),
        image_mask=_cat_padded([p[1] for p in parts]),
        text_states=_cat_padded([p[2] for p in parts]),
        text_mask=_cat_padded([p[3] for p in parts]),
        layer=layer,
    )


def _matching_batch(
    policy: JanusPolicy, images: Sequence[Image.Image], texts: Sequence[str], layer: int, style: PromptStyle
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    encoded = encode_understanding(policy.processor, images, texts, style, mark_text=True)
    ids = encoded.input_ids.to(policy.device)  # [M, P]
    mask = encoded.attention_mask.to(policy.device)
    embeds = understanding_embeddings(policy.model, ids, encoded.pixel_values.to(policy.device, policy.dtype))
    out = policy.model.model.language_model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=positions_from_mask(mask),
        use_cache=False,
        output_hidden_states=layer != -1,
    )
    states = (out.last_hidden_state if layer == -1 else out.hidden_states[layer]).float()  # [M, P, D]
    image_positions = ids == policy.tokens.image_token_id  # [M, P]
    text_positions = encoded.text_token_mask.to(policy.device)  # [M, P]
    if not bool(text_positions.any(dim=1).all()):
        raise ValueError("some text produced no text tokens in the prompt")
    image_states, image_mask = gather_masked(states, image_positions)
    text_states, text_mask = gather_masked(states, text_positions)
    return image_states, image_mask, text_states, text_mask


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along rows, right-padding dim 1 with zeros / False to the widest part."""
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = [0, 0] * (t.dim() - 2) + [0, width - t.shape[1]]
        padded.append(torch.nn.functional.pad(t, pad))
    return torch.cat(padded)
