"""Scoring the G completions of one prompt in one packed sequence, so the prompt's states are computed once.

GRPO scores every completion under its prompt, and the G rows of a group share that prompt (for
understanding: the image's tokens and the question, ~600 tokens on Janus-Pro, ~70 on Shapes). A plain
forward computes the prompt once per row. Here consecutive rows with the same prompt (and the same image)
are packed into one sequence

    [prompt (P, left padded) | completion 1 (C) | ... | completion k (C)]        length L = P + k * C

with a block attention mask: a prompt token attends causally within the prompt; a completion token attends
to the prompt's real tokens and causally within its own completion. Position ids restart after the prompt
for every completion. Each completion token therefore sees exactly the keys, values and positions it sees
in its own row, and its state is the same up to float rounding; the prompt's part of the MLPs, projections
and image encoder runs once per group instead of G times.

The mask is an explicit 4-D mask, which transformers passes to the attention as it is: this works with the
"eager" and "sdpa" attention implementations (`PACKABLE_ATTENTION`), not with kernels that take no mask
(flash attention), where callers score rows one by one as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corl.policy.logits import additive_mask, positions_from_mask

PACKABLE_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class PromptGroups:
    """Which rows share a prompt. R rows in U groups of consecutive rows."""

    first_row: torch.Tensor  # [U] long: the row whose prompt stands for its group
    group: torch.Tensor  # [R] long: the group of each row
    slot: torch.Tensor  # [R] long: the row's place within its group (0 .. size - 1)
    max_size: int  # rows in the largest group

    @property
    def num_groups(self) -> int:
        return int(self.first_row.shape[0])


def consecutive_prompt_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                              images: torch.Tensor | None = None) -> PromptGroups:
    """Group runs of consecutive rows whose prompt ids, prompt mask and (when given) image are equal.

    prompt_ids / prompt_mask [R, P], images [R, ...]. Rollouts write the G answers of a prompt next to each
    other; equal prompts that are not adjacent stay in groups of their own (scored correctly, just not
    shared)."""
    rows = prompt_ids.shape[0]
    same = (prompt_ids[1:] == prompt_ids[:-1]).all(dim=1) & (prompt_mask[1:] == prompt_mask[:-1]).all(dim=1)
    if images is not None:
        same &= (images[1:] == images[:-1]).flatten(1).all(dim=1)
    starts = torch.ones(rows, dtype=torch.bool, device=prompt_ids.device)
    starts[1:] = ~same  # [R]: True where a new group begins
    group = starts.long().cumsum(0) - 1  # [R]
    first_row = starts.nonzero().squeeze(1)  # [U]
    slot = torch.arange(rows, device=prompt_ids.device) - first_row[group]
    return PromptGroups(first_row, group, slot, int(slot.max().item()) + 1 if rows else 0)


@dataclass(frozen=True)
class PackedLayout:
    """Where every row's tokens sit in the packed sequences, and the inputs the LLM needs for them."""

    groups: PromptGroups
    prompt_len: int  # P
    completion_len: int  # C
    positions: torch.Tensor  # [U, L] long
    keep: torch.Tensor  # [U, 1, L, L] bool: True where a query (dim 2) may attend a key (dim 3)

    @property
    def length(self) -> int:
        return self.prompt_len + self.groups.max_size * self.completion_len


def packed_layout(groups: PromptGroups, prompt_mask: torch.Tensor, completion_mask: torch.Tensor) -> PackedLayout:
    """The positions and attention mask of the packed sequences (module docstring).

    prompt_mask [R, P] (left padded), completion_mask [R, C] (right padded). Every query may attend its own
    key, so no row of the mask is empty (padding positions would otherwise give NaN under sdpa); their states
    are never read."""
    device = prompt_mask.device
    prompt_len, completion_len = prompt_mask.shape[1], completion_mask.shape[1]
    k, u = groups.max_size, groups.num_groups
    length = prompt_len + k * completion_len
    # key validity [U, L]: the prompt's mask, then each slot's completion mask (slots a group lacks: 0)
    slots = torch.zeros(u, k, completion_len, dtype=torch.bool, device=device)
    slots[groups.group, groups.slot] = completion_mask.bool()
    valid = torch.cat([prompt_mask[groups.first_row].bool(), slots.flatten(1)], dim=1)  # [U, L]
    # block id of each packed position: 0 for the prompt, s + 1 for completion slot s
    block = torch.cat([torch.zeros(prompt_len, dtype=torch.long, device=device),
                       torch.arange(1, k + 1, device=device).repeat_interleave(completion_len)])  # [L]
    index = torch.arange(length, device=device)
    causal = index[None, :] <= index[:, None]  # [L(query), L(key)]
    same_or_prompt = (block[None, :] == 0) | (block[None, :] == block[:, None])
    keep = (causal & same_or_prompt)[None] & valid[:, None, :]  # [U, L, L]
    keep |= torch.eye(length, dtype=torch.bool, device=device)[None]
    prompt_positions = positions_from_mask(prompt_mask[groups.first_row])  # [U, P]
    after_prompt = prompt_positions[:, -1:] + 1  # [U, 1]: the first completion token's position
    completion_positions = after_prompt + torch.arange(completion_len, device=device).repeat(k)  # [U, k * C]
    positions = torch.cat([prompt_positions, completion_positions], dim=1)
    return PackedLayout(groups, prompt_len, completion_len, positions, keep[:, None])


def pack_embeddings(layout: PackedLayout, prompt_embeds: torch.Tensor, completion_embeds: torch.Tensor) -> torch.Tensor:
    """prompt_embeds [U, P, D] (one per group) and completion_embeds [R, C, D] -> packed [U, L, D]."""
    g = layout.groups
    u, k, c = g.num_groups, g.max_size, layout.completion_len
    slots = completion_embeds.new_zeros(u, k, c, completion_embeds.shape[-1])
    slots = slots.index_put((g.group, g.slot), completion_embeds)  # out of place: differentiable
    return torch.cat([prompt_embeds, slots.flatten(1, 2)], dim=1)


def unpack_scoring_states(layout: PackedLayout, hidden: torch.Tensor) -> torch.Tensor:
    """Packed states [U, L, D] -> the states that predict each row's completion tokens [R, C, D]: the
    prompt's last state, then the row's completion states but its last (as in an unpacked forward)."""
    g, p, c = layout.groups, layout.prompt_len, layout.completion_len
    starts = p + g.slot * c  # [R]: where each row's completion begins
    offsets = torch.arange(c - 1, device=hidden.device)
    columns = torch.cat([torch.full_like(starts, p - 1)[:, None], starts[:, None] + offsets[None]], dim=1)  # [R, C]
    return hidden[g.group[:, None], columns]


def attention_mask_for(layout: PackedLayout, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The 4-D mask in the form the attention implementation takes: bool for sdpa, additive for eager."""
    if attn_implementation not in PACKABLE_ATTENTION:
        raise ValueError(f"packed scoring needs one of {PACKABLE_ATTENTION} attention, not {attn_implementation!r}")
    return layout.keep if attn_implementation == "sdpa" else additive_mask(layout.keep, dtype)
