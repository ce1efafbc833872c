"""`JanusPolicy`: one object holding the model, its processor and every id the policy code needs.

Special ids (BOS, EOS, pad, image placeholder, image start / end) and the number of image tokens are
read from the processor and the model config, never hard-coded: they differ between Janus-Pro-1B,
-7B and our own small tokenizers. The constructor cross-checks them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from corl.policy.prompts import PromptStyle

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
    understanding encoder sees), generated_image_size (px of decoded images), style (PromptStyle),
    static_decoders (compiled decode steps kept by `corl.generation.rollout`).
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
        # Compiled decode steps that `corl.generation` keeps between rollouts, one per shape (they hold
        # KV buffers; clear() frees them).
        self.static_decoders: dict = {}

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
