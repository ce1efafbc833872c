"""Tiny random-weight Janus models for tests: the real transformers classes at toy sizes.

`tiny_janus(seed)` builds tokenizer, processor and model in well under a second, so tests can exercise
every code path of corl.policy (CFG image rollouts, text rollouts with images, scoring, matching)
without downloading anything. Sizes are parametric; the default grid is 32 px / patch 8 = 4 x 4 = 16
image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL import Image
from transformers import JanusForConditionalGeneration, JanusProcessor

from corl.policy.architecture import JanusSizes, build_janus
from corl.policy.tokenizer import build_processor, build_tokenizer

TINY_WORDS: tuple[str, ...] = (
    "a",
    "an",
    "the",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "one",
    "two",
    "three",
    "is",
    "are",
    "what",
    "which",
    "color",
    "shape",
    "how",
    "many",
    "there",
    "left",
    "right",
    "of",
    "above",
    "below",
    "and",
    "yes",
    "no",
    "?",
    ".",
    ",",
    ":",
    "A",
    "B",
    "C",
    "D",
    "think",
    "answer",
    "first",
    "then",
    "give",
    "final",
    "inside",
    "tags",
    "reason",
    "put",
    "your",
    "in",
)

TINY_SIZES = JanusSizes(
    vocab_size=None,  # exactly the tokenizer
    text_hidden_size=64, text_intermediate_size=128, text_layers=2, text_heads=4, text_kv_heads=2,
    max_position_embeddings=1024, image_size=32, patch_size=8, vision_hidden_size=32, vision_layers=1,
    vision_heads=2, vision_mlp_ratio=2.0, vq_codebook_size=64, vq_embed_dim=8, vq_base_channels=32,
    vq_latent_channels=32, vq_res_blocks=1, vq_channel_multiplier=(1, 1, 1, 1),
    initializer_range=0.1,  # larger than usual so random outputs depend clearly on the context
)


def tiny_janus(
    seed: int = 0,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_words: Sequence[str] = TINY_WORDS,
    dtype: torch.dtype = torch.float32,
    sizes: JanusSizes | None = None,
) -> tuple[JanusForConditionalGeneration, JanusProcessor]:
    """A random-weight `JanusForConditionalGeneration` (eval mode) and its processor.

    Pass `sizes` for full control; otherwise TINY_SIZES with the given image grid, width and depth.
    """
    if sizes is None:
        levels = patch_size.bit_length()  # log2(patch) + 1 levels for a power of two
        sizes = replace(
            TINY_SIZES,
            image_size=image_size,
            patch_size=patch_size,
            text_hidden_size=hidden_size,
            text_intermediate_size=2 * hidden_size,
            text_layers=num_layers,
            vq_channel_multiplier=(1,) * levels,
        )
    tokenizer = build_tokenizer(list(vocab_words))
    processor = build_processor(tokenizer, sizes.image_size, patch_size=sizes.patch_size)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_janus(sizes, tokenizer)
    finally:
        torch.random.set_rng_state(generator_state)  # do not disturb the caller's global RNG
    return model.to(dtype), processor


def sample_images(count: int) -> list[Image.Image]:
    """Small distinct RGB images of different sizes and aspect ratios (exercise resize + pad-to-square)."""
    colors = [(255, 0, 0), (0, 0, 255), (0, 200, 0), (240, 240, 0), (90, 20, 160)]
    sizes = [(32, 32), (40, 20), (24, 48), (50, 50), (16, 30)]
    images = []
    for i in range(count):
        image = Image.new("RGB", sizes[i % len(sizes)], colors[i % len(colors)])
        image.putpixel((i % 10, 3), (255, 255, 255))
        images.append(image)
    return images
