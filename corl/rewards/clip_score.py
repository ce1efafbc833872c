"""CLIP score reward (the paper's pilot-study baseline), through the optional `open_clip_torch` package.

score = scale * max(cos(CLIP image embedding, CLIP text embedding), 0). With the default scale 1 the
reward lies in [0, 1]; scale=2.5 gives Hessel et al.'s CLIPScore. `open_clip` is imported when the
reward is built, with a clear error when missing (`pip install 'corl[clip]'`). `pretrained` is an
open_clip tag ("openai", which open_clip downloads unless cached), a local checkpoint file (offline
machines pass a path), or None for random weights (tests). The model is built once, in the factory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from corl.data.images import to_rgb_image
from corl.rewards.image_similarity import import_optional
from corl.rewards.registry import RewardFn, register_factory
from corl.rewards.text import completion_text

logger = logging.getLogger(__name__)


class ClipScoreReward:
    """scale * max(cos(image, text), 0) with an open_clip model built once."""

    __name__ = "clip_score"

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        device: str = "cpu",
        scale: float = 1.0,
        batch_size: int = 32,
    ) -> None:
        open_clip = import_optional("open_clip", "clip", "the 'clip_score' reward")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained, device=device
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device, self.scale, self.batch_size = device, scale, batch_size
        logger.info("CLIP score with %s (%s) on %s", model, pretrained, device)

    @torch.no_grad()
    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        scores: list[float | None] = []
        for start in range(0, len(completions), self.batch_size):
            images = [to_rgb_image(img) for img in completions[start : start + self.batch_size]]
            texts = [completion_text(p) for p in prompts[start : start + self.batch_size]]
            pixels = torch.stack([self.preprocess(img) for img in images]).to(self.device)  # [B, 3, H, W]
            tokens = self.tokenizer(texts).to(self.device)  # [B, T]
            image_emb = torch.nn.functional.normalize(
                self.model.encode_image(pixels).float(), dim=-1
            )  # [B, E]
            text_emb = torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)  # [B, E]
            cos = (image_emb * text_emb).sum(-1)  # [B]
            scores.extend(float(s) for s in (self.scale * cos.clamp(min=0.0)).cpu().tolist())
        return scores


def make_clip_score_reward(
    model: str = "ViT-B-32",
    pretrained: str | None = "openai",
    device: str = "cpu",
    scale: float = 1.0,
    batch_size: int = 32,
) -> RewardFn:
    """CLIP score reward (module docstring)."""
    return ClipScoreReward(model, pretrained, device, scale, batch_size)


register_factory(
    "clip_score",
    make_clip_score_reward,
    description="CLIP score baseline (optional open_clip_torch): max(cos(image, prompt), 0)",
)
