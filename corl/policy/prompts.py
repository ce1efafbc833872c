"""Janus-Pro chat formatting for both tasks, batched with left padding.

Understanding (mm2t): `<|User|>: <image_placeholder>\\n{question} {answer format}\\n\\n<|Assistant|>:`
Generation (t2i):     `<|User|>: {caption}\\n\\n<|Assistant|>:<begin_of_image>`
(the tokenizer prepends BOS; the processor's chat template renders the turns, so a real Janus-Pro
checkpoint's own template is used when one is loaded).

Choices taken:
- Like upstream CoRL, no system prompt by default (`PromptStyle.system_prompt`); the answer-format
  instruction follows the question in the user turn and asks for <think> ... </think> then
  <answer> ... </answer> (`PromptStyle.answer_format`, None to leave it out).
- Image placeholders are expanded with the processor's own `replace_image_token` (begin-of-image,
  N placeholders, end-of-image), then the whole batch is tokenized at once with left padding; a test
  checks the ids equal `JanusProcessor.__call__`'s. Doing the expansion here lets us keep character
  offsets, which locate the user's own text tokens (for text-image matching) through the tokenizer's
  offset mapping instead of hard-coded positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import JanusProcessor

# the wording lives with the other defaults (a recipe sets it as rollout.answer_format)
from corl.config import DEFAULT_ANSWER_FORMAT

_SLOT = "\x00corl-text-slot\x00"  # stands for the user's text while the template is rendered


@dataclass(frozen=True)
class PromptStyle:
    """How prompts are worded around the user's question or caption."""

    answer_format: str | None = DEFAULT_ANSWER_FORMAT  # appended to understanding questions
    system_prompt: str | None = None  # written before the first turn, followed by a blank line
    image_first: bool = True  # understanding: image placeholder before (True) or after the question


@dataclass
class EncodedPrompts:
    """A tokenized, left-padded batch of prompts."""

    input_ids: torch.Tensor  # [B, P] long
    attention_mask: torch.Tensor  # [B, P] long
    texts: list[str]  # B rendered prompts with image placeholders expanded (what was tokenized)
    pixel_values: torch.Tensor | None = None  # [B, 3, H, W] for understanding prompts
    text_token_mask: torch.Tensor | None = None  # [B, P] bool: tokens of the user's own text
    tokens_cut: list[int] | None = None  # B: tokens cut from the start of each user text (see max_length)

    @property
    def num_cut(self) -> int:
        """Prompts that were cut to fit max_length."""
        return sum(1 for n in self.tokens_cut or () if n)


def _render(processor: JanusProcessor, content: list[dict], system_prompt: str | None) -> str:
    messages: list[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": content})
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _expand_images(processor: JanusProcessor, text: str) -> str:
    """Each image placeholder -> begin-of-image + N placeholders + end-of-image, as the processor does."""
    return text.replace(processor.image_token, processor.replace_image_token({}, 0))


def _fill_slot(processor: JanusProcessor, rendered: str, user_text: str) -> tuple[str, tuple[int, int]]:
    """Put user_text in the slot; return the expanded prompt and the character span of user_text."""
    if rendered.count(_SLOT) != 1:
        raise ValueError("the chat template must render the user text exactly once")
    before, after = rendered.split(_SLOT)
    before, after = _expand_images(processor, before), _expand_images(processor, after)
    return before + user_text + after, (len(before), len(before) + len(user_text))


def render_understanding(processor: JanusProcessor, question: str, style: PromptStyle = PromptStyle()) -> str:
    """The understanding prompt for one image and question (placeholder not expanded)."""
    user_text = question.strip() if not style.answer_format else f"{question.strip()} {style.answer_format}"
    text_part = {"type": "text", "text": user_text}
    content = [{"type": "image"}, text_part] if style.image_first else [text_part, {"type": "image"}]
    return _render(processor, content, style.system_prompt)


def render_text_turn(processor: JanusProcessor, text: str, style: PromptStyle = PromptStyle()) -> str:
    """A user turn of text only, up to the open assistant turn (no image, no answer-format instruction)."""
    return _render(processor, [{"type": "text", "text": text.strip()}], style.system_prompt)


def render_generation(processor: JanusProcessor, caption: str, style: PromptStyle = PromptStyle()) -> str:
    """The text-to-image prompt: the caption as the user turn, the assistant turn opened by the
    image-start tag (Janus-Pro's t2i format)."""
    return render_text_turn(processor, caption, style) + processor.image_start_token


def _cut_to_fit(
    processor: JanusProcessor, text: str, span: tuple[int, int], max_length: int
) -> tuple[str, tuple[int, int], int]:
    """Cut the user text (the characters of `span`) from its start until `text` is at most `max_length`
    tokens; the template, the image tokens and what follows the span stay whole. Returns the new text,
    the new span and the number of tokens cut."""
    tokenizer = processor.tokenizer
    cut_total = 0
    for _ in range(8):  # a cut can re-merge tokens at the new start: tokenize again until it fits
        encoded = tokenizer(text, return_offsets_mapping=True)
        excess = len(encoded["input_ids"]) - max_length
        if excess <= 0:
            return text, span, cut_total
        starts = [s for s, e in encoded["offset_mapping"] if s < span[1] and e > span[0]]  # user-text tokens
        if excess >= len(starts):
            raise ValueError(f"a prompt needs {len(encoded['input_ids']) - len(starts)} tokens without its "
                             f"text, more than the limit of {max_length} tokens (rollout.max_prompt_length)")
        new_start = max(starts[excess], span[0])
        text = text[: span[0]] + text[new_start:]
        span = (span[0], span[1] - (new_start - span[0]))
        cut_total += excess
    raise ValueError(f"could not cut a prompt to {max_length} tokens")


def _fit(processor: JanusProcessor, texts: list[str], spans: list[tuple[int, int]], max_length: int | None
         ) -> tuple[list[str], list[tuple[int, int]], list[int]]:
    """Cut each prompt longer than `max_length` tokens from the left of its user text (`spans`: the
    question or the caption); returns texts, spans and tokens cut per prompt."""
    cut = [0] * len(texts)
    if max_length is None:
        return texts, spans, cut
    texts, spans = list(texts), list(spans)
    lengths = [len(ids) for ids in processor.tokenizer(texts)["input_ids"]]
    for row, length in enumerate(lengths):
        if length > max_length:
            texts[row], spans[row], cut[row] = _cut_to_fit(processor, texts[row], spans[row], max_length)
    return texts, spans, cut


def _tokenize(
    processor: JanusProcessor, texts: list[str], spans: list[tuple[int, int]] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    tokenizer = processor.tokenizer
    encoded = tokenizer(
        texts,
        padding="longest",
        padding_side="left",
        return_tensors="pt",
        return_offsets_mapping=spans is not None,
    )
    input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
    text_mask = None
    if spans is not None:
        offsets = encoded["offset_mapping"]  # [B, P, 2] character span of each token
        start = torch.tensor([s for s, _ in spans])[:, None]  # [B, 1]
        end = torch.tensor([e for _, e in spans])[:, None]
        overlaps = (offsets[..., 0] < end) & (offsets[..., 1] > start)  # [B, P]
        special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids))
        text_mask = overlaps & ~special & attention_mask.bool()
    return input_ids, attention_mask, text_mask


def encode_understanding(
    processor: JanusProcessor,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    style: PromptStyle = PromptStyle(),
    *,
    mark_text: bool = False,
    max_length: int | None = None,
) -> EncodedPrompts:
    """Tokenize B (image, question) prompts with left padding; pixel values from the image processor.

    mark_text: also return `text_token_mask`, the tokens of the question itself (not the template,
    the answer-format instruction, special tokens or image tokens).
    max_length: a prompt longer than this many tokens loses the start of its question (never image tokens,
    the template or the answer-format instruction); `tokens_cut` says how many tokens each lost.
    """
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images for {len(questions)} questions")
    if not questions:
        raise ValueError("empty batch")
    texts, spans = [], []
    for question in questions:
        slot_style = PromptStyle(
            answer_format=None, system_prompt=style.system_prompt, image_first=style.image_first
        )
        rendered = render_understanding(processor, _SLOT, slot_style)
        user_text = (
            question.strip() if not style.answer_format else f"{question.strip()} {style.answer_format}"
        )
        text, (start, _) = _fill_slot(processor, rendered, user_text)
        texts.append(text)
        spans.append((start, start + len(question.strip())))  # the question only
    texts, spans, cut = _fit(processor, texts, spans, max_length)
    input_ids, attention_mask, text_mask = _tokenize(processor, texts, spans if mark_text else None)
    rgb = [image.convert("RGB") for image in images]
    pixel_values = processor.image_processor(rgb, return_tensors="pt")["pixel_values"]
    return EncodedPrompts(
        input_ids, attention_mask, texts, pixel_values=pixel_values, text_token_mask=text_mask, tokens_cut=cut
    )


def encode_generation(
    processor: JanusProcessor,
    captions: Sequence[str],
    style: PromptStyle = PromptStyle(),
    *,
    mark_text: bool = False,
    max_length: int | None = None,
) -> EncodedPrompts:
    """Tokenize B text-to-image prompts with left padding; every row ends with the image-start token.
    max_length: a prompt longer than this many tokens loses the start of its caption (`tokens_cut`)."""
    if not captions:
        raise ValueError("empty batch")
    texts, spans = [], []
    for caption in captions:
        rendered = _render(processor, [{"type": "text", "text": _SLOT}], style.system_prompt)
        text, span = _fill_slot(processor, rendered + processor.image_start_token, caption.strip())
        texts.append(text)
        spans.append(span)
    texts, spans, cut = _fit(processor, texts, spans, max_length)
    input_ids, attention_mask, text_mask = _tokenize(processor, texts, spans if mark_text else None)
    return EncodedPrompts(input_ids, attention_mask, texts, text_token_mask=text_mask, tokens_cut=cut)
