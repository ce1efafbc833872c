"""Visual cycle backends: SSIM, MSE, LPIPS (faked when the package is missing), input handling."""

from __future__ import annotations

import io
import math
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from corl.data.images import ImageDecodeError, to_rgb_image
from corl.errors import MissingPackage
from corl.rewards.image_similarity import (
    LPIPSSimilarity,
    MSESimilarity,
    SSIMSimilarity,
    make_image_similarity,
)


@pytest.mark.parametrize("backend", ["ssim", "mse"])
def test_identical_images_score_one(backend, shapes_image):
    sim = make_image_similarity(backend)
    img = shapes_image(1)
    assert sim([img], [img.copy()]) == [pytest.approx(1.0, abs=1e-5)]


@pytest.mark.parametrize("backend", ["ssim", "mse"])
def test_similar_beats_unrelated(backend, shapes_image):
    sim = make_image_similarity(backend)
    real = shapes_image(3)
    noisy = np.asarray(real, dtype=np.float32) + np.random.default_rng(0).normal(0, 12, (48, 48, 3))
    noisy_img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    near, far = sim([real, real], [noisy_img, shapes_image(99)])
    assert 0.0 <= far < near <= 1.0


def test_mse_hand_computed(solid):
    real, gen = solid((100, 100, 100)), solid((150, 150, 150))
    mse = (50 / 255) ** 2
    assert MSESimilarity()([real], [gen]) == [pytest.approx(1 - mse, abs=1e-6)]
    assert MSESimilarity(mode="exp", scale=0.05)([real], [gen]) == [
        pytest.approx(math.exp(-mse / 0.05), abs=1e-6)
    ]
    assert MSESimilarity()([solid((0, 0, 0))], [solid((255, 255, 255))]) == [pytest.approx(0.0, abs=1e-6)]


def test_ssim_uniform_images_are_defined(solid):
    sim = SSIMSimilarity()
    same, different = sim(
        [solid((255, 255, 255)), solid((0, 0, 0))], [solid((255, 255, 255)), solid((255, 255, 255))]
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= different < 0.01  # luminance term: black vs white


def test_different_sizes_compare_at_generated_size(shapes_image):
    real = shapes_image(5, size=96)
    generated = real.resize((48, 48), Image.Resampling.BICUBIC)
    for backend in ("ssim", "mse"):
        score = make_image_similarity(backend)([real], [generated])[0]
        assert score > 0.95


def test_tiny_and_non_square_images(shapes_image):
    real, gen = shapes_image(2, size=8), shapes_image(2, size=8).resize((12, 7))
    for backend in ("ssim", "mse"):
        score = make_image_similarity(backend)([real], [gen])[0]
        assert 0.0 <= score <= 1.0


def test_mixed_sizes_in_one_batch_keep_row_order(shapes_image):
    a, b = shapes_image(1, 32), shapes_image(2, 64)
    scores = SSIMSimilarity()([a, None, b], [a, a, shapes_image(7, 64)])
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] is None  # no real image: does not apply
    assert scores[2] < 0.9


def test_image_inputs(tmp_path, shapes_image):
    img = shapes_image(4)
    path = tmp_path / "x.png"
    img.save(path)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    as_float = np.asarray(img, dtype=np.float32) / 255.0
    rgba = img.convert("RGBA")
    for source in (
        str(path),
        {"bytes": buffer.getvalue(), "path": None},
        np.asarray(img),
        as_float,
        rgba,
        img.convert("L"),
    ):
        out = to_rgb_image(source)
        assert out.mode == "RGB" and out.size == img.size
    with pytest.raises(ImageDecodeError, match="cannot read an image"):
        to_rgb_image(42)


def test_lpips_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    # MissingPackage: the CLI prints it as the user's to fix, in one line (not as an unexpected error)
    with pytest.raises(MissingPackage, match=r"pip install 'corl\[janus\]'"):
        make_image_similarity("lpips")


def test_lpips_path_with_a_stand_in_network(monkeypatch, solid):
    """The LPIPS wrapper's plumbing: inputs in [-1, 1], 1 - distance, clipping, row order."""
    seen = {}

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net="alex", pnet_rand=False, verbose=True):
            super().__init__()
            seen["net"], seen["pnet_rand"] = net, pnet_rand

        def forward(self, a, b):
            seen["range"] = (float(torch.minimum(a.min(), b.min())), float(torch.maximum(a.max(), b.max())))
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True) * 2  # [B, 1, 1, 1], can exceed 1

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    sim = LPIPSSimilarity(net="vgg")
    same, opposite = sim(
        [solid((0, 0, 0), (64, 64)), solid((0, 0, 0), (64, 64))],
        [solid((0, 0, 0), (64, 64)), solid((255, 255, 255), (64, 64))],
    )
    assert seen["net"] == "vgg" and seen["range"] == (-1.0, 1.0) and seen["pnet_rand"] is False
    assert same == pytest.approx(1.0) and opposite == 0.0  # distance 4 clipped


def test_unknown_backend():
    with pytest.raises(ValueError, match="ssim"):
        make_image_similarity("psnr")


def test_real_lpips_with_its_linear_heads_and_a_random_backbone(solid):
    """The `janus` extra's real lpips (its shipped linear heads; the ImageNet backbone left random, since
    fetching it needs the network): identical images score 1, different ones less, at the official 224 px."""
    pytest.importorskip("lpips", reason="the janus extra (pip install 'corl[janus]') is not installed")
    for net in ("alex", "vgg"):
        sim = LPIPSSimilarity(net=net, size=(224, 224), pretrained_backbone=False)
        same, different = sim([solid((200, 0, 0), (48, 48))] * 2,
                              [solid((200, 0, 0), (48, 48)), solid((0, 0, 200), (48, 48))])
        assert same == pytest.approx(1.0) and 0.0 <= different < 1.0, net
