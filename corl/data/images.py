"""Image values in every form a dataset may hold them, checked and turned into RGB PIL images.

Accepted forms: a PIL image; raw encoded bytes (bytes / bytearray / memoryview); a file path (str or
os.PathLike; relative paths resolve against ``image_root``, else the working directory; ``scheme://``
paths open through fsspec); a ``datasets.Image`` storage dict ``{"bytes": ..., "path": ...}`` (bytes win
when both are set); a numpy array H x W (x C): uint8, or floats in [0, 1] (clipped, rounded to uint8).

``inspect_image`` decodes fully (``Image.load``, with truncated-file tolerance switched off), converts to
RGB and reports why a value is unusable instead of raising, so the loader can count and skip bad rows.
``to_rgb_image`` is the raising counterpart for code that holds one value.

RGB conversion is PIL's ``convert("RGB")``, the same one ``datasets.Image(mode="RGB")`` applies when the
loaded dataset is read: an alpha channel is dropped, not composited on a background.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFile

# Reasons a row's image is skipped; the loader's report counts rows under these names.
MISSING_IMAGE = "missing_image"  # the value is None / an empty dict
MISSING_IMAGE_FILE = "missing_image_file"  # a path that does not exist
EMPTY_IMAGE_FILE = "empty_image_file"  # zero bytes (empty file or empty bytes value)
UNREADABLE_IMAGE = "unreadable_image"  # PIL cannot identify or fully decode it (garbage, truncated, ...)
ZERO_SIZE_IMAGE = "zero_size_image"  # decodes, but width or height is 0
UNSUPPORTED_IMAGE_VALUE = "unsupported_image_value"  # a python type we do not know how to read


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of ``inspect_image``: ``reason`` is None when the image is usable.

    ``resolved_path``: the absolute path the value pointed at (None for in-memory values).
    ``image``: the decoded RGB image when usable.
    """

    reason: str | None
    detail: str = ""
    resolved_path: str | None = None
    image: Image.Image | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class ImageDecodeError(ValueError):
    """An image value that cannot be turned into an RGB image; ``reason`` is one of the skip reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@contextlib.contextmanager
def strict_truncation() -> Iterator[None]:
    """Make PIL raise on truncated files while the block runs (another library may have relaxed it)."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def resolve_image_path(path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None) -> str:
    """Absolute path for ``path``: kept if absolute or a URL, else joined to ``image_root`` (or the cwd)."""
    text = os.fspath(path)
    if "://" in text:
        return text
    text = os.path.expanduser(text)
    if not os.path.isabs(text) and image_root is not None:
        text = os.path.join(os.fspath(image_root), text)
    return os.path.abspath(text)


def _read_path(path: str) -> bytes:
    if "://" in path:
        import fsspec  # a dependency of datasets; only needed for remote paths

        with fsspec.open(path, "rb") as handle:
            return handle.read()
    with open(path, "rb") as handle:
        return handle.read()


def _decode_bytes(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decode every pixel now, so a truncated file fails here and not mid-epoch
    return image


def _finish(image: Image.Image, resolved_path: str | None) -> ImageCheck:
    width, height = image.size
    if width == 0 or height == 0:
        return ImageCheck(ZERO_SIZE_IMAGE, f"size {width}x{height}", resolved_path)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return ImageCheck(None, "", resolved_path, rgb)


def _uint8_pixels(array: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, C] pixels as uint8: floats are read as [0, 1] intensities; a single channel
    loses its last axis (PIL has no one-channel H x W x 1 mode)."""
    if array.dtype != np.uint8 and np.issubdtype(array.dtype, np.floating):
        array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def inspect_image(value: Any, image_root: str | os.PathLike[str] | None = None) -> ImageCheck:
    """Decode ``value`` into an RGB image, or say why it cannot be (never raises for bad data)."""
    resolved_path: str | None = None
    data: bytes | None = None
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            value = value["path"]
        elif data is None:
            return ImageCheck(MISSING_IMAGE, "image value has neither bytes nor path")
    if value is None:
        return ImageCheck(MISSING_IMAGE, "image value is None")
    if isinstance(value, Image.Image):
        try:
            value.load()
            return _finish(value, None)
        except Exception as err:  # noqa: BLE001 - any decoder failure means an unusable image
            return ImageCheck(UNREADABLE_IMAGE, f"{type(err).__name__}: {err}")
    if isinstance(value, np.ndarray):
        try:
            return _finish(Image.fromarray(_uint8_pixels(value)), None)
        except Exception as err:  # noqa: BLE001
            return ImageCheck(UNREADABLE_IMAGE, f"array {value.shape} {value.dtype}: {err}")
    if data is None and isinstance(value, (str, os.PathLike)):
        resolved_path = resolve_image_path(value, image_root)
        if "://" not in resolved_path and not os.path.isfile(resolved_path):
            return ImageCheck(MISSING_IMAGE_FILE, f"no file at {resolved_path}", resolved_path)
        try:
            data = _read_path(resolved_path)
        except OSError as err:
            return ImageCheck(MISSING_IMAGE_FILE, f"cannot read {resolved_path}: {err}", resolved_path)
    elif data is None and isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    if data is None:
        return ImageCheck(UNSUPPORTED_IMAGE_VALUE, f"cannot read an image from a {type(value).__name__}")
    where = resolved_path or "in-memory bytes"
    if len(data) == 0:
        return ImageCheck(EMPTY_IMAGE_FILE, f"{where} has 0 bytes", resolved_path)
    try:
        with strict_truncation():
            image = _decode_bytes(bytes(data))
        return _finish(image, resolved_path)
    except Exception as err:  # noqa: BLE001 - PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return ImageCheck(UNREADABLE_IMAGE, f"{where}: {type(err).__name__}: {err}", resolved_path)


def to_rgb_image(value: Any, image_root: str | os.PathLike[str] | None = None) -> Image.Image:
    """``value`` (any accepted form) as an RGB PIL image; ImageDecodeError if it cannot be read."""
    if isinstance(value, Image.Image) and value.mode == "RGB" and value.width > 0 and value.height > 0:
        return value  # the common case after loading: datasets already decoded to RGB
    check = inspect_image(value, image_root)
    if check.image is None:
        raise ImageDecodeError(check.reason or UNREADABLE_IMAGE, check.detail)
    return check.image
