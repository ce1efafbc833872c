"""R_TIM: text-image matching scored by the policy's own understanding pass over "<image> + prompt".

With the hidden states of the (generated) image tokens i_j and of the prompt tokens t_k,

    R = 1/2 * ( mean_j max_k cos(i_j, t_k)  +  mean_k max_j cos(t_k, i_j) ),   R in [-1, 1],

the average of an image->text and a text->image greedy alignment (BERTScore-like recall and precision).
Means and maxima run over VALID positions only, given by the masks the policy returns (never by
hard-coded offsets of one prompt template). scale="raw" returns R itself, as the paper and the official
code do; scale="unit" (the default) maps it to [0, 1] by (R + 1) / 2: an affine map keeps the whole range
and the ordering (clipping at 0 would flatten every negative alignment to one value), and puts R_TIM on
the scale of a mean R_cycle in R_t2i = R_cycle + R_TIM. The affine map halves R_TIM's spread within a
group, and so its weight in the group-normalized advantage.
A row without a valid image or text position has no score: NaN, which `RewardSet` logs and counts as a
failure. Zero vectors have cosine 0 with everything (normalization with eps).

The policy side: `corl.policy.matching.matching_states(policy, images, texts) -> MatchingStates`. The
registered reward `tim` calls it under torch.no_grad() with the generated images and the prompts (option
`text_column` to read another column instead). `tim_score` itself takes any object with the four
attributes of `MatchingStatesLike`, or a mapping with those keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from corl.rewards.registry import RewardFn, register_factory
from corl.rewards.text import completion_text

if TYPE_CHECKING:
    from corl.policy.policy import JanusPolicy


class MatchingStatesLike(Protocol):
    """What R_TIM reads: hidden states of one understanding pass over N (image, text) pairs.

    `corl.policy.matching.MatchingStates` has these fields; any object (or mapping) with them works.
    """

    image_states: torch.Tensor  # [N, Li, D] hidden states at image-token positions (padded)
    image_mask: torch.Tensor  # [N, Li] bool, True = a real image token
    text_states: torch.Tensor  # [N, Lt, D] hidden states at prompt-token positions (padded)
    text_mask: torch.Tensor  # [N, Lt] bool, True = a real prompt token


TIM_SCALES = ("unit", "raw")


def _field(states: Any, name: str) -> torch.Tensor:
    value = states[name] if isinstance(states, Mapping) else getattr(states, name)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"matching states field {name!r} must be a tensor, got {type(value).__name__}")
    return value


def tim_raw(states: MatchingStatesLike | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """R in [-1, 1] per row, [N] float32 (NaN for a row without valid image or text positions)."""
    image, text = _field(states, "image_states"), _field(states, "text_states")
    image_mask, text_mask = _field(states, "image_mask").bool(), _field(states, "text_mask").bool()
    n, li, d = image.shape
    if (
        text.shape[0] != n
        or text.shape[2] != d
        or image_mask.shape != (n, li)
        or text_mask.shape != text.shape[:2]
    ):
        raise ValueError(
            f"matching states disagree: image {tuple(image.shape)}, image_mask {tuple(image_mask.shape)}, "
            f"text {tuple(text.shape)}, text_mask {tuple(text_mask.shape)}"
        )
    image_mask, text_mask = image_mask.to(image.device), text_mask.to(image.device)
    i_hat = torch.nn.functional.normalize(image.float(), dim=-1, eps=1e-8)  # [N, Li, D]
    t_hat = torch.nn.functional.normalize(text.float().to(image.device), dim=-1, eps=1e-8)  # [N, Lt, D]
    cos = torch.bmm(i_hat, t_hat.transpose(1, 2))  # [N, Li, Lt]
    pair_valid = image_mask[:, :, None] & text_mask[:, None, :]
    cos = cos.masked_fill(~pair_valid, float("-inf"))
    image_to_text = cos.max(dim=2).values.masked_fill(
        ~image_mask, 0.0
    )  # [N, Li]: best text token per image token
    text_to_image = cos.max(dim=1).values.masked_fill(
        ~text_mask, 0.0
    )  # [N, Lt]: best image token per text token
    n_image, n_text = image_mask.sum(1), text_mask.sum(1)  # [N]
    score = 0.5 * (image_to_text.sum(1) / n_image.clamp(min=1) + text_to_image.sum(1) / n_text.clamp(min=1))
    return score.masked_fill((n_image == 0) | (n_text == 0), float("nan"))


def tim_score(states: MatchingStatesLike | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """R_TIM in [0, 1] per row: (R + 1) / 2, [N] float32 (NaN where R is undefined)."""
    return (tim_raw(states) + 1.0) / 2.0


def matching_states(policy: JanusPolicy, images: Sequence[Any], texts: Sequence[str]) -> MatchingStatesLike:
    """`corl.policy.matching.matching_states`, imported on first use: it loads the Janus model classes,
    which importing the rewards should not (seconds)."""
    from corl.policy.matching import matching_states as states_of

    return states_of(policy, images, texts)


class TIMReward:
    """R_TIM through `matching_states(policy, images, texts)`, under no_grad."""

    __name__ = "tim"

    def __init__(self, policy: JanusPolicy, text_column: str | None = None, scale: str = "unit") -> None:
        from corl.policy.policy import JanusPolicy

        if scale not in TIM_SCALES:
            raise ValueError(f"scale must be one of {', '.join(TIM_SCALES)}, got {scale!r}")
        self.scale = scale

        if not isinstance(policy, JanusPolicy):
            raise ValueError(f"the 'tim' reward scores with the policy's own hidden states: it needs the "
                             f"JanusPolicy being trained, got {type(policy).__name__}")
        self.policy, self.text_column = policy, text_column

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        if self.text_column is None:
            texts = [completion_text(p) for p in prompts]
        elif self.text_column in columns:
            texts = [completion_text(t) for t in columns[self.text_column]]
        else:
            raise KeyError(f"the tim reward reads the column {self.text_column!r}, which is missing")
        with torch.no_grad():
            states = matching_states(self.policy, list(completions), texts)
            scores = tim_score(states) if self.scale == "unit" else tim_raw(states)
        if scores.shape[0] != len(completions):
            raise ValueError(f"matching_states gave {scores.shape[0]} rows for {len(completions)} images")
        return [float(s) for s in scores.cpu().tolist()]


def make_tim_reward(policy: JanusPolicy, text_column: str | None = None, scale: str = "unit") -> RewardFn:
    """R_TIM reward for `policy` (texts: the prompts, or the column `text_column`; scale: unit or raw)."""
    return TIMReward(policy, text_column, scale)


register_factory(
    "tim",
    make_tim_reward,
    needs_policy=True,
    description="R_TIM: text-image matching from the policy's own hidden states, raw in [-1, 1] or unit",
)
