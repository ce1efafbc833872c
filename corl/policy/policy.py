"""`JanusPolicy`: one object holding the model, its processor and every id the policy code needs.

Special ids (BOS, EOS, pad, image placeholder, image start / end) and the number of image tokens are
read from the processor and the model config, never hard-coded: they differ between Janus-Pro-1B,
-7B and our own small tokenizers. The constructor cross-checks them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusProcessor

from corl.policy import matching, rollout, scoring
from corl.policy.prompts import PromptStyle
from corl.policy.records import ImageRollout, MatchingStates, TextRollout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpecialTokens:
    bos_id: int
    eos_id: int
    pad_id: int
    image_token_id: int  # understanding placeholder
    boi_id: int  # image start
    eoi_id: int  # image end

    @property
    def not_in_text(self) -> tuple[int, ...]:
        """Ids a text answer may never contain (probability 0 in text rollouts and text scoring)."""
        return (self.image_token_id,)

    @classmethod
    def from_processor(cls, processor: JanusProcessor, model: JanusForConditionalGeneration) -> SpecialTokens:
        tokenizer = processor.tokenizer
        ids = {
            "bos_id": tokenizer.bos_token_id,
            "eos_id": tokenizer.eos_token_id,
            "pad_id": tokenizer.pad_token_id,
            "image_token_id": tokenizer.convert_tokens_to_ids(processor.image_token),
            "boi_id": tokenizer.convert_tokens_to_ids(processor.image_start_token),
            "eoi_id": tokenizer.convert_tokens_to_ids(processor.image_end_token),
        }
        missing = [name for name, value in ids.items() if value is None or value == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer lacks these Janus special tokens: {missing}")
        if ids["image_token_id"] != model.config.image_token_id:
            raise ValueError(
                f"processor image token id {ids['image_token_id']} != model config image_token_id "
                f"{model.config.image_token_id}: processor and checkpoint do not belong together"
            )
        if len(tokenizer) > model.config.text_config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens, the model only {model.config.text_config.vocab_size}"
            )
        return cls(**{name: int(value) for name, value in ids.items()})


class JanusPolicy:
    """The policy: a `JanusForConditionalGeneration` plus its `JanusProcessor`.

    Attributes: model, processor, tokens (SpecialTokens), num_image_tokens (N), image_size (px the
    understanding encoder sees), generated_image_size (px of decoded images), style (PromptStyle).
    Properties: device, dtype (of the model's parameters), image_vocab_size (VQ codes the generation
    head scores).
    """

    def __init__(
        self,
        model: JanusForConditionalGeneration,
        processor: JanusProcessor,
        *,
        style: PromptStyle | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.style = style or PromptStyle()
        self.tokens = SpecialTokens.from_processor(processor, model)
        vision, vq = model.config.vision_config, model.config.vq_config
        self.num_image_tokens = int(vision.num_image_tokens)
        if processor.num_image_tokens != self.num_image_tokens or vq.num_patches**2 != self.num_image_tokens:
            raise ValueError(
                f"image token counts disagree: processor {processor.num_image_tokens}, vision config "
                f"{self.num_image_tokens}, VQ grid {vq.num_patches}^2"
            )
        self.image_size = int(vision.image_size)
        self.generated_image_size = int(vq.num_patches * 2 ** (len(vq.channel_multiplier) - 1))

    # ------------------------------------------------------------------------------ properties
    @property
    def image_vocab_size(self) -> int:
        return self.model.model.generation_head.vision_head.out_features

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def __repr__(self) -> str:
        return (
            f"JanusPolicy({type(self.model).__name__}, N={self.num_image_tokens} image tokens, "
            f"image {self.image_size}px, {self.dtype}, {self.device})"
        )

    # -------------------------------------------------------------------------------- rollouts
    def rollout_images(self, captions: Sequence[str], **kwargs) -> ImageRollout:
        """See `corl.policy.rollout.rollout_images` (group_size, cfg_weight, temperature, top_k, seed, ...)."""
        return rollout.rollout_images(self, captions, **kwargs)

    def rollout_text(self, images: Sequence[Image.Image], questions: Sequence[str], **kwargs) -> TextRollout:
        """See `corl.policy.rollout.rollout_text` (group_size, max_new_tokens, temperature, greedy, ...)."""
        return rollout.rollout_text(self, images, questions, **kwargs)

    def decode_images(self, image_tokens: torch.Tensor) -> list[Image.Image]:
        return rollout.decode_images(self, image_tokens)

    # --------------------------------------------------------------------------------- scoring
    def image_token_logps(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        image_tokens: torch.Tensor,
        cfg_weight: float | None,
        **kwargs,
    ):
        """See `corl.policy.scoring.image_token_logps` -> [R, N] (temperature, return_entropy)."""
        return scoring.image_token_logps(self, prompt_ids, prompt_mask, image_tokens, cfg_weight, **kwargs)

    def text_token_logps(
        self,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        **kwargs,
    ):
        """See `corl.policy.scoring.text_token_logps` -> [R, C] (temperature, return_entropy)."""
        return scoring.text_token_logps(
            self, prompt_ids, prompt_mask, pixel_values, completion_ids, completion_mask, **kwargs
        )

    def matching_states(
        self, images: Sequence[Image.Image], texts: Sequence[str], **kwargs
    ) -> MatchingStates:
        """See `corl.policy.matching.matching_states` (layer, style, batch_size)."""
        return matching.matching_states(self, images, texts, **kwargs)

    # ---------------------------------------------------------------------------- conveniences
    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        *,
        greedy: bool = True,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        seed: int | None = None,
        style: PromptStyle | None = None,
    ) -> list[str]:
        """One answer per (image, question): decoded text, special tokens removed, tags kept."""
        result = rollout.rollout_text(
            self,
            images,
            questions,
            greedy=greedy,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            style=style,
        )
        return result.texts

    def generate_images(
        self,
        captions: Sequence[str],
        n: int = 1,
        *,
        cfg_weight: float = 5.0,
        seed: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
    ) -> list[Image.Image]:
        """n images per caption (caption-major order) with CFG."""
        result = rollout.rollout_images(
            self,
            captions,
            group_size=n,
            cfg_weight=cfg_weight,
            seed=seed,
            temperature=temperature,
            top_k=top_k,
        )
        return result.images


# The modules each name can select. "language_model" is the LLM backbone together with its text head
# (as in Janus-Pro's reference code, where the head belongs to the language model).
PARAMETER_GROUPS: dict[str, tuple[str, ...]] = {
    "language_model": ("model.language_model", "lm_head"),
    "vision_model": ("model.vision_model",),
    "aligner": ("model.aligner",),
    "vqmodel": ("model.vqmodel",),
    "generation_embeddings": ("model.generation_embeddings",),
    "generation_aligner": ("model.generation_aligner",),
    "generation_head": ("model.generation_head",),
}


def trainable_parameters(
    policy: JanusPolicy | JanusForConditionalGeneration, train: Iterable[str] = ("language_model",)
) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze the named groups; return the trainable parameters.

    Default: only the LLM backbone (+ text head) trains; the vision encoder, aligners, VQ model,
    generation embeddings and generation head stay frozen, as in the paper. Names: PARAMETER_GROUPS.
    """
    model = policy.model if isinstance(policy, JanusPolicy) else policy
    train = tuple(train)
    unknown = [name for name in train if name not in PARAMETER_GROUPS]
    if unknown:
        raise KeyError(f"unknown parameter groups {unknown}; valid: {sorted(PARAMETER_GROUPS)}")
    model.requires_grad_(False)
    selected: dict[int, torch.nn.Parameter] = {}
    for name in train:
        for path in PARAMETER_GROUPS[name]:
            for param in model.get_submodule(path).parameters():
                param.requires_grad_(True)
                selected[id(param)] = param
    params = list(selected.values())
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "trainable: %s = %.2fM of %.2fM parameters",
        ", ".join(train),
        sum(p.numel() for p in params) / 1e6,
        total / 1e6,
    )
    return params
