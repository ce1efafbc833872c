"""Images that hold no Shapes object: the negatives a verifier of generation must reject.

A generation scorer that reads shapes into noise can be gamed: an untrained model (or a policy under
RL) then earns points with garbage. These generators give seeded examples of such garbage, for the
analyzer's and scorer's tests and for `benchmarks/shapes_analyzer.py`. Every generator takes a numpy
Generator and an image size and returns a size x size RGB PIL image.

Kinds (NOISE_KINDS):
- uniform: i.i.d. uniform RGB noise.
- gaussian: Gaussian noise around a random grey level (std 0.1..0.3 on a 0..1 scale).
- salt_pepper: a white image with 5..50% of pixels replaced by black, white, palette-colored or random
  colored impulses (palette impulses so that median-filtered clumps can take a palette hue).
- blocky: one random color per 8x8 patch, blurred (sigma 0.5..1.5 px), plus a little pixel noise: what
  the decoder of a random-weight VQ model (patch 8) tends to produce.
- plain: one non-white color everywhere (a palette color half of the time).
- scribbles: 1..6 random polylines, 1..4 px wide, in palette or random colors, on white.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from corl.shapes.render import check_size, gaussian_blur
from corl.shapes.scene import BACKGROUND, COLORS

_PALETTE = np.array(list(COLORS.values()), dtype=np.uint8)  # (K, 3)


def _to_image(array: np.ndarray) -> Image.Image:
    """(H, W, 3) float 0..1 -> RGB image (clipped, rounded)."""
    return Image.fromarray(np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8))


def uniform_noise(rng: np.random.Generator, size: int = 48) -> Image.Image:
    check_size(size)
    return _to_image(rng.random((size, size, 3)))


def gaussian_noise(rng: np.random.Generator, size: int = 48) -> Image.Image:
    check_size(size)
    grey, std = rng.uniform(0.3, 0.8), rng.uniform(0.1, 0.3)
    return _to_image(grey + rng.normal(0.0, std, (size, size, 3)))


def salt_pepper(rng: np.random.Generator, size: int = 48) -> Image.Image:
    check_size(size)
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    hit = rng.random((size, size)) < rng.uniform(0.05, 0.5)  # (H, W) impulse pixels
    n = int(hit.sum())
    kind = rng.integers(0, 4, n)  # 0 black, 1 white, 2 palette color, 3 random color
    values = np.zeros((n, 3), dtype=np.uint8)
    values[kind == 1] = 255
    values[kind == 2] = _PALETTE[rng.integers(0, len(_PALETTE), int((kind == 2).sum()))]
    values[kind == 3] = rng.integers(0, 256, (int((kind == 3).sum()), 3), dtype=np.uint8)
    out[hit] = values
    return Image.fromarray(out)


def blocky_noise(rng: np.random.Generator, size: int = 48, patch: int = 8) -> Image.Image:
    check_size(size)
    n = -(-size // patch)  # patches per side, the last one cropped
    colors = rng.random((n, n, 3))  # (n, n, 3) one color per patch
    array = np.kron(colors, np.ones((patch, patch, 1)))[:size, :size]  # (size, size, 3)
    array = gaussian_blur(array, rng.uniform(0.5, 1.5))
    return _to_image(array + rng.normal(0.0, 0.02, array.shape))


def plain_color(rng: np.random.Generator, size: int = 48) -> Image.Image:
    check_size(size)
    if rng.random() < 0.5:
        color = tuple(int(v) for v in _PALETTE[rng.integers(0, len(_PALETTE))])
    else:
        while True:  # any color clearly different from the white background
            color = tuple(int(v) for v in rng.integers(0, 256, 3))
            if max(255 - c for c in color) >= 40:
                break
    return Image.new("RGB", (size, size), color)


def scribbles(rng: np.random.Generator, size: int = 48) -> Image.Image:
    check_size(size)
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 7))):
        if rng.random() < 0.6:
            color = tuple(int(v) for v in _PALETTE[rng.integers(0, len(_PALETTE))])
        else:
            color = tuple(int(v) for v in rng.integers(0, 220, 3))
        points = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(int(rng.integers(2, 8)))]
        draw.line(points, fill=color, width=int(rng.integers(1, 5)), joint="curve")
    return image


NOISE_KINDS: dict[str, Callable[[np.random.Generator, int], Image.Image]] = {
    "uniform": uniform_noise,
    "gaussian": gaussian_noise,
    "salt_pepper": salt_pepper,
    "blocky": blocky_noise,
    "plain": plain_color,
    "scribbles": scribbles,
}


def noise_image(kind: str, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """One image of `kind` (a key of NOISE_KINDS) drawn with `rng`."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
    return NOISE_KINDS[kind](rng, size)
