"""Image values in every form a dataset may hold them, checked and turned into RGB PIL images.

Accepted forms: a PIL image; raw encoded bytes (bytes / bytearray / memoryview); a local file path (str
or os.PathLike; relative paths resolve against ``image_root``, else the working directory); a
``datasets.Image`` storage dict ``{"bytes": ..., "path": ...}`` (bytes win when both are set); a numpy
array H x W (x C): uint8, or floats in [0, 1] (clipped, rounded to uint8).

Refused, never read: ``scheme://`` paths (http, s3, hf, file, ...): a dataset must not make corl reach
out to the network, so remote images are downloaded by the user and given as local paths. With
``confine_to``, paths whose real location (symlinks and ``..`` resolved) lies outside that folder: a
dataset row must not make corl read arbitrary local files. Images of more than PIL's
``Image.MAX_IMAGE_PIXELS`` pixels (decompression bombs) are refused, not merely warned about.

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
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Reasons a row's image is skipped; the loader's report counts rows under these names.
MISSING_IMAGE = "missing_image"  # the value is None / an empty dict
MISSING_IMAGE_FILE = "missing_image_file"  # a path that does not exist
EMPTY_IMAGE_FILE = "empty_image_file"  # zero bytes (empty file or empty bytes value)
UNREADABLE_IMAGE = "unreadable_image"  # PIL cannot identify or fully decode it (garbage, truncated, ...)
ZERO_SIZE_IMAGE = "zero_size_image"  # decodes, but width or height is 0
UNSUPPORTED_IMAGE_VALUE = "unsupported_image_value"  # a python type we do not know how to read
REMOTE_IMAGE = "remote_image"  # a scheme:// path: never fetched
IMAGE_OUTSIDE_FOLDER = "image_outside_dataset_folder"  # a path that leaves the folder it is confined to

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# warnings.catch_warnings swaps process-wide state: concurrent blocks in the loader's decode threads could
# restore each other's filters, so they take turns (only around Image.open, which reads just the header).
_WARNINGS_LOCK = threading.Lock()


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


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for a ``scheme://`` path (http, https, s3, gs, hf, file, ...)."""
    return bool(_URL.match(os.fspath(path)))


def resolve_image_path(path: str | os.PathLike[str], image_root: str | os.PathLike[str] | None) -> str:
    """Absolute path for ``path``: kept if absolute or a URL, else joined to ``image_root`` (or the cwd)."""
    text = os.fspath(path)
    if is_remote(text):
        return text
    text = os.path.expanduser(text)
    if not os.path.isabs(text) and image_root is not None:
        text = os.path.join(os.fspath(image_root), text)
    return os.path.abspath(text)


def _outside(real_path: str, folder: str | os.PathLike[str]) -> str | None:
    """The real path of ``folder`` when ``real_path`` (already realpath'd) is not inside it, else None."""
    real_folder = os.path.realpath(os.fspath(folder))
    try:
        inside = os.path.commonpath([real_path, real_folder]) == real_folder
    except ValueError:  # different drives (Windows)
        inside = False
    return None if inside else real_folder


def _read_path(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _decode_bytes(data: bytes) -> Image.Image:
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    image.load()  # decode every pixel now, so a truncated file fails here and not mid-epoch
    return image


def _decode_failure(err: Exception, where: str) -> str:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"{where}: image too large to decode safely ({str(err).split(', could be')[0]})"
    if isinstance(err, UnidentifiedImageError):  # its own text names a BytesIO object, not the file
        return f"{where}: not an image file (unknown format or damaged header)"
    return f"{where}: {type(err).__name__}: {err}"


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


def inspect_image(
    value: Any,
    image_root: str | os.PathLike[str] | None = None,
    confine_to: str | os.PathLike[str] | None = None,
) -> ImageCheck:
    """Decode ``value`` into an RGB image, or say why it cannot be (never raises for bad data).

    ``confine_to``: a path value whose real location lies outside this folder is refused unread.
    In-memory values (bytes, PIL images, arrays) are never confined.
    """
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
        if is_remote(resolved_path):
            detail = f"{resolved_path}: remote images are not downloaded; download them and give local paths"
            return ImageCheck(REMOTE_IMAGE, detail, resolved_path)
        real_path = os.path.realpath(resolved_path)
        folder = _outside(real_path, confine_to) if confine_to is not None else None
        if folder is not None:
            target = resolved_path if real_path == resolved_path else f"{resolved_path} (-> {real_path})"
            detail = (
                f"{target} lies outside the dataset folder {folder}; to read it, set data.allow_images_outside=true "
                "in the recipe (corl eval: --allow-images-outside)"
            )
            return ImageCheck(IMAGE_OUTSIDE_FOLDER, detail, resolved_path)
        if not os.path.isfile(real_path):
            return ImageCheck(MISSING_IMAGE_FILE, f"no file at {resolved_path}", resolved_path)
        try:
            # Read the real path that was checked rather than follow the link a second time.
            data = _read_path(real_path)
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
        return ImageCheck(UNREADABLE_IMAGE, _decode_failure(err, where), resolved_path)


def to_rgb_image(
    value: Any,
    image_root: str | os.PathLike[str] | None = None,
    confine_to: str | os.PathLike[str] | None = None,
) -> Image.Image:
    """``value`` (any accepted form) as an RGB PIL image; ImageDecodeError if it cannot be read."""
    if isinstance(value, Image.Image) and value.mode == "RGB" and value.width > 0 and value.height > 0:
        return value  # the common case after loading: datasets already decoded to RGB
    check = inspect_image(value, image_root, confine_to)
    if check.image is None:
        raise ImageDecodeError(check.reason or UNREADABLE_IMAGE, check.detail)
    return check.image
