"""Captioners for the textual half of R_cycle: images -> one caption each.

- `blip`: BLIP image captioning (the paper's captioner) through transformers'
  `BlipForConditionalGeneration` + `BlipProcessor`. `load_blip` is the one loader for hub ids
  ("Salesforce/blip-image-captioning-base") and local folders; it is cached, so a recipe that builds
  `cycle` and `cycle_text` loads BLIP once. Greedy decoding (num_beams=1) by default; an optional
  conditioning `prompt` ("a picture of") is removed from the front of the captions it produces.
- `self`: the policy captions its own images (later upstream CoRL): the JanusPolicy being trained answers
  `instruction` for every image (`corl.generation.rollout.answer`, greedy by default). If it answers in
  the think/answer format, the <answer> content is the caption; <think> blocks are removed otherwise.
- `shapes`: the Shapes world's analyzer turned into text, `corl.shapes.describe(corl.shapes.analyze(img))`
  (imported when the captioner is built, with a clear error when corl.shapes is missing).
All captioners return "" for an image they cannot describe; the text similarity scores "" as 0.0.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from corl.data.images import to_rgb_image
from corl.rewards.text import completion_text, extract_tag, strip_think

if TYPE_CHECKING:
    from corl.policy.policy import JanusPolicy

logger = logging.getLogger(__name__)

Captioner = Callable[[Sequence[Any]], list]  # images -> list[str]

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
DEFAULT_SELF_INSTRUCTION = "Describe this image in one sentence."


@functools.lru_cache(maxsize=2)
def load_blip(model: str = DEFAULT_BLIP, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(BlipForConditionalGeneration in eval mode, BlipProcessor) from a hub id or a local folder."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    torch_dtype = getattr(torch, dtype)
    processor = BlipProcessor.from_pretrained(model)
    blip = BlipForConditionalGeneration.from_pretrained(model, dtype=torch_dtype).to(device).eval()
    logger.info("BLIP captioner %s on %s (%s)", model, device, dtype)
    return blip, processor


class BlipCaptioner:
    """BLIP captions, model loaded once (module docstring)."""

    name = "blip"

    def __init__(
        self,
        model: str = DEFAULT_BLIP,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int = 30,
        num_beams: int = 1,
        prompt: str | None = None,
        batch_size: int = 16,
    ) -> None:
        self.model, self.processor = load_blip(model, device, dtype)
        self.device, self.dtype = device, getattr(torch, dtype)
        self.max_new_tokens, self.num_beams, self.prompt, self.batch_size = (
            max_new_tokens,
            num_beams,
            prompt,
            batch_size,
        )

    @torch.no_grad()
    def __call__(self, images: Sequence[Any]) -> list[str]:
        captions: list[str] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [to_rgb_image(img) for img in images[start : start + self.batch_size]]
            if self.prompt:
                inputs = self.processor(images=chunk, text=[self.prompt] * len(chunk), return_tensors="pt")
            else:
                inputs = self.processor(images=chunk, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            tokens = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams, do_sample=False
            )
            for text in self.processor.batch_decode(tokens, skip_special_tokens=True):
                text = text.strip()
                if self.prompt and text.lower().startswith(self.prompt.lower()):
                    text = text[len(self.prompt) :].strip()
                captions.append(text)
        return captions


def answer(policy: JanusPolicy, images: Sequence[Any], questions: Sequence[str], *, greedy: bool) -> list[str]:
    """`corl.generation.rollout.answer`, imported on first use: it loads the Janus model classes, which
    importing the rewards should not (seconds)."""
    from corl.generation.rollout import answer as answer_with

    return answer_with(policy, images, questions, greedy=greedy)


class PolicyCaptioner:
    """The policy captions its own images via `answer(policy, images, questions, greedy=True)`."""

    name = "self"

    def __init__(
        self, policy: JanusPolicy, instruction: str = DEFAULT_SELF_INSTRUCTION, greedy: bool = True
    ) -> None:
        from corl.policy.policy import JanusPolicy

        if not isinstance(policy, JanusPolicy):
            raise ValueError(f"the 'self' captioner lets the trained policy caption its images: it needs the "
                             f"JanusPolicy, got {type(policy).__name__}")
        self.policy, self.instruction, self.greedy = policy, instruction, greedy

    @torch.no_grad()
    def __call__(self, images: Sequence[Any]) -> list[str]:
        pil = [to_rgb_image(img) for img in images]
        answers = answer(self.policy, pil, [self.instruction] * len(pil), greedy=self.greedy)
        if len(answers) != len(pil):
            raise ValueError(f"answer() returned {len(answers)} answers for {len(pil)} images")
        captions = []
        for reply in answers:
            text = completion_text(reply)
            tagged = extract_tag(text, "answer")
            captions.append((tagged if tagged is not None else strip_think(text)).strip())
        return captions


class ShapesCaptioner:
    """Caption = describe(analyze(image)) from the Shapes world analyzer."""

    name = "shapes"

    def __init__(self) -> None:
        try:
            from corl.shapes import analyze, describe
        except ImportError:
            try:  # the package may not re-export them (yet): the analyzer module defines both
                from corl.shapes.analyzer import analyze, describe
            except ImportError as err:
                raise ImportError(
                    "the 'shapes' captioner needs corl.shapes with analyze(image) and describe(analysis)"
                ) from err
        self._analyze, self._describe = analyze, describe

    def __call__(self, images: Sequence[Any]) -> list[str]:
        return [str(self._describe(self._analyze(to_rgb_image(img)))).strip() for img in images]


def make_captioner(name: str, policy: Any = None, **options: Any) -> Captioner:
    """Build a captioner by name: 'blip' (options of BlipCaptioner), 'self' (needs `policy`), 'shapes'."""
    if name == "blip":
        return BlipCaptioner(**options)
    if name == "self":
        return PolicyCaptioner(policy, **options)
    if name == "shapes":
        if options:
            raise ValueError(f"the 'shapes' captioner takes no options, got {sorted(options)}")
        return ShapesCaptioner()
    raise ValueError(f"unknown captioner {name!r}; valid: blip, self, shapes")
