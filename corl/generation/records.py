"""The rollouts' typed records: what a rollout hands to rewards, scoring and the loss.

Shapes: B = prompts, G = generations per prompt, R = B * G rows, prompt-major (row r belongs to prompt
r // G), P = padded prompt length (left padding), N = image tokens per image (always exactly N: an
image is never "truncated"), C = completion length of the longest text answer in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image


@dataclass
class ImageRollout:
    """B captions x G images sampled with classifier-free guidance."""

    prompt_ids: torch.Tensor  # [R, P] long, left padded, ends with the image-start token
    prompt_mask: torch.Tensor  # [R, P] long, 1 = real token
    image_tokens: torch.Tensor  # [R, N] long VQ codes, exactly N per image
    images: list[Image.Image]  # R decoded images (empty list when decoding was skipped)
    captions: list[str]  # R captions (caption of prompt r // G)
    group_size: int  # G
    cfg_weight: float  # w in logits = uncond + w * (cond - uncond); 1.0 = no guidance
    temperature: float
    top_k: int | None = None
    seed: int | None = None
    prompts_cut: int = 0  # captions cut from the left to fit the prompt length limit

    @property
    def num_rows(self) -> int:
        return self.image_tokens.shape[0]

    @property
    def num_prompts(self) -> int:
        return self.num_rows // self.group_size



@dataclass
class TextRollout:
    """B (image, question) prompts x G sampled answers."""

    prompt_ids: torch.Tensor  # [R, P] long, left padded, contains N image placeholders per row
    prompt_mask: torch.Tensor  # [R, P] long
    pixel_values: torch.Tensor  # [R, 3, H, W] float, the image of each row (copied per generation)
    completion_ids: torch.Tensor  # [R, C] long, pad after the first EOS
    completion_mask: torch.Tensor  # [R, C] long, 1 up to and including the first EOS
    texts: list[str]  # R decoded completions (special tokens skipped, reasoning tags kept)
    questions: list[str]  # R questions as given (before the answer-format instruction)
    group_size: int
    temperature: float
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    is_truncated: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))  # [R] no EOS
    prompts_cut: int = 0  # questions cut from the left to fit the prompt length limit

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def num_prompts(self) -> int:
        return self.num_rows // self.group_size
