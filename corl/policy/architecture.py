"""Janus configurations at any size, built from transformers' own config classes.

`janus_config` ties together the sizes that must agree inside transformers' Janus classes:
- the understanding encoder sees `image_size` px in `patch_size` patches: (image_size // patch_size) ** 2
  placeholder tokens per image (vision `num_image_tokens`, also the processor's count);
- generation uses the same grid: JanusConfig sets the VQ model's `num_patches` to
  image_size // patch_size, so an image is exactly (image_size // patch_size) ** 2 VQ codes;
- the VQ decoder upsamples by 2 ** (levels - 1), so it needs log2(patch_size) + 1 channel levels for the
  decoded image to come out at `image_size` px again (Janus-Pro: 384 / 16 -> 24 x 24 = 576 tokens,
  5 levels; the Shapes model: 48 / 8 -> 6 x 6 = 36 tokens, 4 levels);
- both aligners and the generation head map into / out of the LLM width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from transformers import (
    GenerationConfig,
    JanusConfig,
    JanusForConditionalGeneration,
    JanusVisionConfig,
    JanusVQVAEConfig,
    LlamaConfig,
    PreTrainedTokenizerBase,
)


@dataclass(frozen=True)
class JanusSizes:
    """Every size knob of a Janus model (defaults: Janus-Pro-1B, from its published config)."""

    # LLM backbone (Llama architecture, DeepSeek-LLM 1.3B in Janus-Pro-1B)
    vocab_size: int | None = 102400  # None: exactly the tokenizer's size
    text_hidden_size: int = 2048
    text_intermediate_size: int = 5632
    text_layers: int = 24
    text_heads: int = 16
    text_kv_heads: int = 16
    max_position_embeddings: int = 16384
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False  # Janus-Pro keeps a separate text head
    # understanding encoder (SigLIP-L/16 at 384 px) and its aligner
    image_size: int = 384
    patch_size: int = 16
    vision_hidden_size: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_mlp_ratio: float = 4.0
    aligner_depth: int = 2
    # generation side: VQ tokenizer (16384 codes of dim 8), generation aligner and head
    vq_codebook_size: int = 16384
    vq_embed_dim: int = 8
    vq_base_channels: int = 128
    vq_latent_channels: int = 256
    vq_res_blocks: int = 2
    vq_channel_multiplier: tuple[int, ...] | None = None  # None: (1, 1, 2, 2, 4) cut to the needed levels
    initializer_range: float = 0.02

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_image_tokens(self) -> int:
        return self.grid**2


JANUS_PRO_1B = JanusSizes()
# DeepSeek-LLM 7B backbone; the same SigLIP-L/16 encoder and 16384-code VQ tokenizer as the 1B.
JANUS_PRO_7B = JanusSizes(text_hidden_size=4096, text_intermediate_size=11008, text_layers=30, text_heads=32,
                          text_kv_heads=32)
# Hub ids of transformers-format Janus-Pro checkpoints -> their published sizes (for planning offline).
PUBLISHED_SIZES = {
    "deepseek-community/Janus-Pro-1B": JANUS_PRO_1B,
    "deepseek-community/Janus-Pro-7B": JANUS_PRO_7B,
}


def _vq_levels(patch_size: int) -> int:
    levels = math.log2(patch_size)
    if not levels.is_integer() or patch_size < 2:
        raise ValueError(
            f"patch_size must be a power of two >= 2 (the VQ decoder upsamples by 2), got {patch_size}"
        )
    return int(levels) + 1


def janus_config(sizes: JanusSizes, tokenizer: PreTrainedTokenizerBase) -> JanusConfig:
    """A `JanusConfig` whose vocabulary and special ids come from `tokenizer` and sizes from `sizes`."""
    if sizes.image_size % sizes.patch_size:
        raise ValueError(f"image_size {sizes.image_size} is not a multiple of patch_size {sizes.patch_size}")
    levels = _vq_levels(sizes.patch_size)
    multiplier = sizes.vq_channel_multiplier or (1, 1, 2, 2, 4, 4, 8)[:levels]
    if len(multiplier) != levels:
        raise ValueError(
            f"vq_channel_multiplier needs {levels} levels to upsample {sizes.grid} codes per side back to "
            f"{sizes.image_size} px, got {multiplier}"
        )
    for channels in [sizes.vq_base_channels * m for m in multiplier] + [sizes.vq_latent_channels]:
        if channels % 32:
            raise ValueError(f"VQ channel counts must be multiples of 32 (GroupNorm(32)), got {channels}")
    image_token_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    vocab_size = sizes.vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    text_config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=sizes.text_hidden_size,
        intermediate_size=sizes.text_intermediate_size, num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads, num_key_value_heads=sizes.text_kv_heads,
        max_position_embeddings=sizes.max_position_embeddings, rope_theta=sizes.rope_theta,
        rms_norm_eps=sizes.rms_norm_eps, initializer_range=sizes.initializer_range,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=sizes.tie_word_embeddings,
    )
    vision_config = JanusVisionConfig(
        hidden_size=sizes.vision_hidden_size, num_hidden_layers=sizes.vision_layers,
        num_attention_heads=sizes.vision_heads, image_size=sizes.image_size, patch_size=sizes.patch_size,
        mlp_ratio=sizes.vision_mlp_ratio,
        projection_dim=sizes.text_hidden_size,  # understanding aligner output = LLM width
        depth=sizes.aligner_depth, num_image_tokens=sizes.num_image_tokens,
        initializer_range=sizes.initializer_range,
    )
    vq_config = JanusVQVAEConfig(
        embed_dim=sizes.vq_embed_dim, num_embeddings=sizes.vq_codebook_size,
        latent_channels=sizes.vq_latent_channels, base_channels=sizes.vq_base_channels,
        channel_multiplier=list(multiplier), num_res_blocks=sizes.vq_res_blocks,
        projection_dim=sizes.text_hidden_size,  # generation aligner output = LLM width
        num_hidden_layers=sizes.aligner_depth,
        image_token_embed_dim=sizes.text_hidden_size,  # generation head input = LLM width
        initializer_range=sizes.initializer_range,
    )
    config = JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=image_token_id,
        tie_word_embeddings=sizes.tie_word_embeddings,
    )
    assert config.vq_config.num_patches == sizes.grid  # set by JanusConfig from the vision grid
    return config


def janus_generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """The generation config transformers' `JanusForConditionalGeneration.generate` reads its ids from
    (BOS / pad for the unconditional CFG row, `boi_token_id` in generation_kwargs), as on the hub."""
    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(tokenizer.boi_token)},
    )


def build_janus(sizes: JanusSizes, tokenizer: PreTrainedTokenizerBase) -> JanusForConditionalGeneration:
    """A randomly initialized Janus model (call `torch.manual_seed` first for reproducible weights)."""
    model = JanusForConditionalGeneration(janus_config(sizes, tokenizer))
    model.generation_config = janus_generation_config(tokenizer)
    return model.eval()
