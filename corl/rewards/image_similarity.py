"""Visual half of R_cycle: similarity(real image, generated image) in [0, 1], higher = more similar.

Backends (all take lists of images and return one float per pair; NaN means the backend failed):
- `ssim`: torchmetrics' SSIM (Gaussian window 11, sigma 1.5, data range 1, per-image mean over channels),
  negative values (anti-correlated structure) clipped to 0. The window shrinks to the largest odd size
  that fits when a compared image is smaller than 11 px.
- `mse`: on [0, 1] RGB pixels, `1 - MSE` (mode "linear", the default: bounded, no free parameter) or
  `exp(-MSE / scale)` (mode "exp": spreads the small MSEs of similar images over more of [0, 1]).
- `lpips`: `1 - LPIPS`, clipped to [0, 1], through the optional `lpips` package (extra `corl[janus]` or
  `corl[lpips]`, which bring torchvision too); imported lazily, with a clear error when missing. Note
  that `lpips` fetches its torchvision backbone weights (AlexNet/VGG/SqueezeNet) through torch.hub, so on
  an offline machine they must already be in the torch hub cache (`corl prefetch` puts them there). The
  paper's choice; the official code uses VGG at 224 px.

Options common to all: `size` (a fixed (H, W) compare size), `min_size`, `device` (where the math runs;
SSIM's Gaussian windows at Janus' 384 px are slow on a CPU: use the GPU for Janus-size images;
`benchmarks/rewards.py` times each backend).

Preprocessing (same for every backend): both images become RGB (alpha dropped, grayscale repeated);
the REAL image is resized (bicubic, antialiased) to the generated image's size, so comparisons happen
at generation resolution; a side shorter than the backend's `min_size` (16 px for SSIM/MSE, 64 px for
LPIPS, whose AlexNet pooling needs it) is upsampled first. `size=(H, W)` forces one compare size.
Images arrive as PIL images, HxW(xC) numpy arrays (uint8, or float in [0, 1]), file paths, or Hugging
Face datasets image dicts ({"bytes": ...} / {"path": ...}).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from corl.data.images import to_rgb_image
from corl.errors import MissingPackage

logger = logging.getLogger(__name__)

ImageSimilarity = Callable[[Sequence[Any], Sequence[Any]], list]  # (reals, generated) -> list[float]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, 3]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def compare_size(generated: Image.Image, size: tuple[int, int] | None, min_size: int) -> tuple[int, int]:
    """(H, W) at which a pair is compared: `size`, else the generated image's, each side >= min_size."""
    if size is not None:
        return int(size[0]), int(size[1])
    width, height = generated.size
    return max(height, min_size), max(width, min_size)


def _has_nonfinite(image: Any) -> bool:
    return isinstance(image, np.ndarray) and image.dtype.kind == "f" and not np.isfinite(image).all()


def prepare_pairs(
    reals: Sequence[Any],
    generated: Sequence[Any],
    size: tuple[int, int] | None,
    min_size: int,
    failed_rows: list[int] | None = None,
) -> dict[tuple[int, int], tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Group the rows that have a real image by compare size.

    Returns {(H, W): (row indices, real [B, 3, H, W], generated [B, 3, H, W])}, values in [0, 1].
    Rows whose real image is None are left out (their similarity is None: it does not apply); rows
    with a NaN/inf pixel array are left out and appended to `failed_rows` (their similarity is NaN).
    """
    if len(reals) != len(generated):
        raise ValueError(f"{len(reals)} real images for {len(generated)} generated images")
    failed_rows = [] if failed_rows is None else failed_rows
    groups: dict[tuple[int, int], tuple[list[int], list[torch.Tensor], list[torch.Tensor]]] = {}
    for row, (real, gen) in enumerate(zip(reals, generated)):
        if real is None:
            continue
        if _has_nonfinite(real) or _has_nonfinite(gen):
            failed_rows.append(row)  # e.g. a broken decoder: a failure (NaN), not a silently black image
            continue
        gen_img = to_rgb_image(gen)
        height, width = compare_size(gen_img, size, min_size)
        real_img = to_rgb_image(real).resize((width, height), Image.Resampling.BICUBIC)
        if gen_img.size != (width, height):
            gen_img = gen_img.resize((width, height), Image.Resampling.BICUBIC)
        rows, real_ts, gen_ts = groups.setdefault((height, width), ([], [], []))
        rows.append(row)
        real_ts.append(to_tensor(real_img))
        gen_ts.append(to_tensor(gen_img))
    return {key: (rows, torch.stack(r), torch.stack(g)) for key, (rows, r, g) in groups.items()}


def _scatter(
    n: int, parts: list[tuple[list[int], torch.Tensor]], failed_rows: list[int]
) -> list[float | None]:
    """Per-group scores [B] back into one list of n (None: no real image; NaN: a failed row)."""
    out: list[float | None] = [None] * n
    for row in failed_rows:
        out[row] = float("nan")
    for rows, scores in parts:
        for row, score in zip(rows, scores.tolist()):
            out[row] = float(score)
    return out


class SSIMSimilarity:
    """max(SSIM, 0) between the real and the generated image (module docstring)."""

    name = "ssim"

    def __init__(self, size: tuple[int, int] | None = None, min_size: int = 16, device: str = "cpu") -> None:
        from torchmetrics.functional.image import structural_similarity_index_measure

        self._ssim = structural_similarity_index_measure
        self.size, self.min_size, self.device = size, min_size, torch.device(device)

    def __call__(self, reals: Sequence[Any], generated: Sequence[Any]) -> list[float | None]:
        parts, failed = [], []
        for (height, width), (rows, real, gen) in prepare_pairs(
            reals, generated, self.size, self.min_size, failed
        ).items():
            kernel = min(11, _largest_odd(min(height, width)))
            scores = self._ssim(
                gen.to(self.device),
                real.to(self.device),
                data_range=1.0,
                kernel_size=kernel,
                reduction="none",
            )  # [B]
            parts.append((rows, scores.clamp(min=0.0, max=1.0).cpu()))  # clamp keeps NaN as NaN
        return _scatter(len(generated), parts, failed)


def _largest_odd(n: int) -> int:
    return n if n % 2 == 1 else n - 1


class MSESimilarity:
    """1 - MSE (mode "linear") or exp(-MSE / scale) (mode "exp") on [0, 1] RGB pixels."""

    name = "mse"

    def __init__(
        self,
        mode: str = "linear",
        scale: float = 0.05,
        size: tuple[int, int] | None = None,
        min_size: int = 16,
        device: str = "cpu",
    ) -> None:
        if mode not in ("linear", "exp"):
            raise ValueError(f"mse mode must be 'linear' or 'exp', got {mode!r}")
        if mode == "exp" and not scale > 0:
            raise ValueError(f"mse scale must be > 0, got {scale}")
        self.mode, self.scale, self.size, self.min_size = mode, scale, size, min_size
        self.device = torch.device(device)

    def __call__(self, reals: Sequence[Any], generated: Sequence[Any]) -> list[float | None]:
        parts, failed = [], []
        for rows, real, gen in prepare_pairs(reals, generated, self.size, self.min_size, failed).values():
            mse = ((gen.to(self.device) - real.to(self.device)) ** 2).flatten(1).mean(dim=1)  # [B], in [0, 1]
            score = 1.0 - mse if self.mode == "linear" else torch.exp(-mse / self.scale)
            parts.append((rows, score.cpu()))
        return _scatter(len(generated), parts, failed)


def import_optional(module: str, extra: str, purpose: str) -> Any:
    """Import an optional package, or raise MissingPackage (an ImportError the CLI prints as the user's to
    fix) saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingPackage(
            f"{purpose} needs the optional package '{module}', which is not installed: "
            f"pip install 'corl[{extra}]' (or pip install {extra if extra != 'clip' else 'open_clip_torch'})"
        ) from err


class LPIPSSimilarity:
    """1 - LPIPS(real, generated), clipped to [0, 1]; the network is built once here."""

    name = "lpips"

    def __init__(
        self, net: str = "alex", device: str = "cpu", size: tuple[int, int] | None = None, min_size: int = 64,
        pretrained_backbone: bool = True,
    ) -> None:
        lpips = import_optional("lpips", "janus", "the 'lpips' visual similarity")
        self.device = torch.device(device)
        # the linear heads ship inside the lpips package; the ImageNet backbone comes through torchvision's
        # cache (TORCH_HOME, fetched by `corl prefetch`); pretrained_backbone=False keeps it random (tests)
        self.model = lpips.LPIPS(net=net, pnet_rand=not pretrained_backbone, verbose=False).to(self.device).eval()
        self.size, self.min_size = size, min_size

    @torch.no_grad()
    def __call__(self, reals: Sequence[Any], generated: Sequence[Any]) -> list[float | None]:
        parts, failed = [], []
        for rows, real, gen in prepare_pairs(reals, generated, self.size, self.min_size, failed).values():
            # LPIPS expects [-1, 1] inputs; it returns distances [B, 1, 1, 1].
            distance = self.model(gen.to(self.device) * 2 - 1, real.to(self.device) * 2 - 1).flatten().float()
            parts.append((rows, (1.0 - distance).clamp(0.0, 1.0).cpu()))  # clamp keeps NaN as NaN
        return _scatter(len(generated), parts, failed)


IMAGE_SIMILARITIES: dict[str, type] = {"ssim": SSIMSimilarity, "mse": MSESimilarity, "lpips": LPIPSSimilarity}


def make_image_similarity(name: str, **options: Any) -> ImageSimilarity:
    """Build a visual similarity backend by name ('ssim', 'mse', 'lpips') with its options."""
    if name not in IMAGE_SIMILARITIES:
        raise ValueError(f"unknown visual similarity {name!r}; valid: {', '.join(IMAGE_SIMILARITIES)}")
    return IMAGE_SIMILARITIES[name](**options)
