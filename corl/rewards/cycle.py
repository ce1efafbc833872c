"""R_cycle: bidirectional cycle consistency of a generated image.

    visual half  v_i = similarity(real image of the row, generated image i)      (image_similarity.py)
    textual half t_i = similarity(caption of generated image i, the row's prompt) (captioners.py,
                                                                                  text_similarity.py)
    combine="sum":  R_cycle,i = v_i + t_i, in [0, 2]: the paper's Eq. 3 and the official code
                    (BERTScore F1 + 1 - LPIPS)
    combine="mean": R_cycle,i = (v_i + t_i) / 2, in [0, 1]: on R_TIM's scale (the default, and what the
                    Shapes recipes were tuned with)

A half that does not apply to a row (no real image in the row's `image` column) is None and the row's
R_cycle is the other half alone; a half that FAILS (NaN from a backend) makes R_cycle NaN, which
`RewardSet` turns into a logged, counted failure. After each call the reward's `last_components` holds
{"cycle/visual": [...], "cycle/text": [...]} (RewardSet logs them as rewards/cycle/visual/mean, ...),
and `last_captions` the captions of the generated images (for sample logs).

Registered names (all factories, built once):
- `cycle`: both halves. Options: combine, visual, visual_options, captioner, captioner_options, text_similarity,
  text_similarity_options, reference_column (policy is passed by the registry for captioner="self").
- `cycle_visual`: the visual half alone. Options: visual, visual_options.
- `cycle_text`: the textual half alone. Options: captioner, captioner_options, text_similarity,
  text_similarity_options, reference_column.
Defaults are the offline ones (ssim, the Shapes analyzer, BERTScore with the bundled MiniLM); the
paper's setting is visual="lpips", captioner="blip" (BERTScore as in its code; SPICE in its text).
`reference_column`: the column holding the text the caption is compared with; None = the prompts
(a conversation prompt contributes the content of its last message).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from corl.rewards.captioners import Captioner, make_captioner
from corl.rewards.image_similarity import ImageSimilarity, make_image_similarity
from corl.rewards.registry import RewardFn, register_factory
from corl.rewards.text import completion_text
from corl.rewards.text_similarity import TextSimilarity, make_text_similarity

HALVES = ("visual", "text")


COMBINE_MODES = ("mean", "sum")


def combine_halves(visual: float | None, text: float | None, combine: str = "mean") -> float | None:
    """Mean (or sum) of the halves that apply; None if neither applies; NaN if a half is NaN."""
    present = [h for h in (visual, text) if h is not None]
    if not present:
        return None
    if any(isinstance(h, float) and math.isnan(h) for h in present):
        return float("nan")
    return sum(present) / (len(present) if combine == "mean" else 1)


class CycleReward:
    """R_cycle (or one of its halves) with its backends built once (module docstring)."""

    def __init__(
        self,
        halves: Sequence[str] = HALVES,
        visual: ImageSimilarity | None = None,
        captioner: Captioner | None = None,
        text_similarity: TextSimilarity | None = None,
        reference_column: str | None = None,
        name: str = "cycle",
        combine: str = "mean",
    ) -> None:
        if combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
        self.combine = combine
        unknown = set(halves) - set(HALVES)
        if unknown or not halves:
            raise ValueError(f"halves must be a non-empty subset of {HALVES}, got {list(halves)}")
        if "visual" in halves and visual is None:
            raise ValueError("the visual half needs an image similarity backend")
        if "text" in halves and (captioner is None or text_similarity is None):
            raise ValueError("the textual half needs a captioner and a text similarity backend")
        self.halves = tuple(halves)
        self.visual, self.captioner, self.text_similarity = visual, captioner, text_similarity
        self.reference_column = reference_column
        self.__name__ = name
        self.last_components: dict[str, list[float | None]] = {}
        self.last_captions: list[str] = []

    def visual_half(self, completions: Sequence[Any], columns: Mapping[str, Any]) -> list[float | None]:
        if "image" not in columns:
            raise KeyError("the visual cycle half needs an 'image' column with the real images")
        return self.visual(list(columns["image"]), list(completions))

    def text_half(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Any]
    ) -> list[float | None]:
        if self.reference_column is None:
            references = [completion_text(p) for p in prompts]
        elif self.reference_column in columns:
            references = [completion_text(r) for r in columns[self.reference_column]]
        else:
            raise KeyError(
                f"the textual cycle half reads the column {self.reference_column!r}, which is missing"
            )
        captions = [c if isinstance(c, str) else "" for c in self.captioner(list(completions))]
        self.last_captions = captions
        return self.text_similarity(captions, references)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        n = len(completions)
        visual: list[float | None] = [None] * n
        text: list[float | None] = [None] * n
        if "visual" in self.halves:
            visual = self.visual_half(completions, columns)
        if "text" in self.halves:
            text = self.text_half(prompts, completions, columns)
        if len(visual) != n or len(text) != n:
            raise ValueError(f"a cycle backend returned {len(visual)}/{len(text)} values for {n} images")
        self.last_components = {}
        if len(self.halves) == 2:
            self.last_components = {"cycle/visual": list(visual), "cycle/text": list(text)}
        return [combine_halves(v, t, self.combine) for v, t in zip(visual, text)]


def make_cycle_reward(
    visual: str = "ssim",
    visual_options: Mapping[str, Any] | None = None,
    captioner: str = "shapes",
    captioner_options: Mapping[str, Any] | None = None,
    text_similarity: str = "bertscore",
    text_similarity_options: Mapping[str, Any] | None = None,
    reference_column: str | None = None,
    policy: Any = None,
    halves: Sequence[str] = HALVES,
    combine: str = "mean",
) -> CycleReward:
    """R_cycle with named backends, each built once here.

    visual: 'ssim' | 'mse' | 'lpips' (options: see image_similarity.py, e.g. {"mode": "exp"} for mse,
    {"net": "alex", "device": "cuda"} for lpips). captioner: 'shapes' | 'blip' | 'self' (options: blip
    {"model", "device", "dtype", "max_new_tokens", "num_beams", "prompt", "batch_size"}; self
    {"instruction", "greedy"}, and the policy). text_similarity: 'bertscore' | 'overlap' (bertscore
    options {"model", "num_layers", "device", "batch_size", "rescale_with_baseline", "lang",
    "baseline_path"}). combine: 'mean' or 'sum' of the halves (module docstring).
    """
    visual_backend = (
        make_image_similarity(visual, **dict(visual_options or {})) if "visual" in halves else None
    )
    captioner_backend = text_backend = None
    if "text" in halves:
        captioner_backend = make_captioner(captioner, policy=policy, **dict(captioner_options or {}))
        text_backend = make_text_similarity(text_similarity, **dict(text_similarity_options or {}))
    name = "cycle" if len(halves) == 2 else f"cycle_{halves[0]}"
    return CycleReward(halves, visual_backend, captioner_backend, text_backend, reference_column, name, combine)


def _build_cycle_visual(visual: str = "ssim", visual_options: Mapping[str, Any] | None = None) -> RewardFn:
    return make_cycle_reward(visual, visual_options, halves=("visual",))


def _build_cycle_text(
    captioner: str = "shapes",
    captioner_options: Mapping[str, Any] | None = None,
    text_similarity: str = "bertscore",
    text_similarity_options: Mapping[str, Any] | None = None,
    reference_column: str | None = None,
    policy: Any = None,
) -> RewardFn:
    return make_cycle_reward(
        captioner=captioner,
        captioner_options=captioner_options,
        text_similarity=text_similarity,
        text_similarity_options=text_similarity_options,
        reference_column=reference_column,
        policy=policy,
        halves=("text",),
    )


register_factory("cycle", make_cycle_reward, fixed=("halves",),
                 description="R_cycle: mean (or sum) of the visual and textual cycle halves")
register_factory(
    "cycle_visual", _build_cycle_visual, description="visual cycle half: sim(real image, generated)"
)
register_factory(
    "cycle_text", _build_cycle_text, description="textual cycle half: sim(prompt, caption(generated))"
)
