import os
import socket
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

import corl.data.images as images_module
from corl.data.images import (
    EMPTY_IMAGE_FILE,
    IMAGE_OUTSIDE_FOLDER,
    MISSING_IMAGE,
    MISSING_IMAGE_FILE,
    REMOTE_IMAGE,
    UNREADABLE_IMAGE,
    UNSUPPORTED_IMAGE_VALUE,
    ZERO_SIZE_IMAGE,
    ImageDecodeError,
    inspect_image,
    to_rgb_image,
)


def test_good_png_from_every_form(image_dir):
    good = image_dir["good"]
    data = good.read_bytes()
    forms = [
        str(good),
        good,
        "good.png",  # relative, resolved against image_root
        data,
        bytearray(data),
        {"bytes": data, "path": None},
        {"bytes": None, "path": "good.png"},
        Image.open(good),
        np.asarray(Image.open(good)),
    ]
    for form in forms:
        check = inspect_image(form, image_root=good.parent)
        assert check.ok, (type(form), check)
        assert check.image.mode == "RGB" and check.image.size == (24, 24)
    assert inspect_image("good.png", image_root=good.parent).resolved_path == str(good)


@pytest.mark.parametrize(
    "name, reason",
    [("truncated", UNREADABLE_IMAGE), ("garbage", UNREADABLE_IMAGE), ("empty", EMPTY_IMAGE_FILE),
     ("missing", MISSING_IMAGE_FILE)],
)
def test_broken_files_are_reported_not_raised(image_dir, name, reason):
    check = inspect_image(str(image_dir[name]))
    assert not check.ok
    assert check.reason == reason
    assert check.image is None
    assert str(image_dir[name]) in check.detail


def test_truncated_png_is_caught_even_if_pil_was_told_to_tolerate_it(image_dir, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert inspect_image(str(image_dir["truncated"])).reason == UNREADABLE_IMAGE
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global is restored


def test_other_bad_values():
    assert inspect_image(None).reason == MISSING_IMAGE
    assert inspect_image({"bytes": None, "path": None}).reason == MISSING_IMAGE
    assert inspect_image(b"").reason == EMPTY_IMAGE_FILE
    assert inspect_image(b"\x89PNG\r\n\x1a\nnot really").reason == UNREADABLE_IMAGE
    assert inspect_image(Image.new("RGB", (0, 5))).reason == ZERO_SIZE_IMAGE
    assert inspect_image(12345).reason == UNSUPPORTED_IMAGE_VALUE


def test_to_rgb_image_converts_modes(image_dir):
    for name in ("rgba", "gray"):
        image = to_rgb_image(str(image_dir[name]))
        assert image.mode == "RGB" and image.size == (24, 24)
    gray = Image.open(image_dir["gray"])
    expected = np.asarray(gray)
    got = np.asarray(to_rgb_image(gray))
    assert np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 2], expected)


def test_to_rgb_image_raises_with_reason(image_dir):
    with pytest.raises(ImageDecodeError) as info:
        to_rgb_image(str(image_dir["garbage"]))
    assert info.value.reason == UNREADABLE_IMAGE


@pytest.fixture
def no_reads(monkeypatch):
    """Fail the test if a file is opened for its bytes or a socket is made."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected read / connection: {args}")

    monkeypatch.setattr(images_module, "_read_path", refuse)
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    "value",
    ["http://example.com/a.png", "https://example.com/a.png", "s3://bucket/a.png", "gs://bucket/a.png",
     "hf://datasets/x/y/a.png", "file:///etc/hosts", {"bytes": None, "path": "https://example.com/b.png"}],
)
def test_remote_images_are_never_fetched(value, image_dir, no_reads):
    url = value["path"] if isinstance(value, dict) else value
    check = inspect_image(value, image_root=image_dir["good"].parent)
    assert check.reason == REMOTE_IMAGE
    assert check.image is None
    assert check.detail == f"{url}: remote images are not downloaded; download them and give local paths"
    with pytest.raises(ImageDecodeError) as info:
        to_rgb_image(value)
    assert info.value.reason == REMOTE_IMAGE


def test_paths_outside_the_confining_folder_are_refused_unread(tmp_path, image_dir, png_bytes, monkeypatch):
    folder = image_dir["good"].parent
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes(seed=7))
    sibling = tmp_path / "images2"  # shares the folder's name as a prefix, still outside
    sibling.mkdir()
    (sibling / "a.png").write_bytes(png_bytes(seed=8))
    link = folder / "link.png"
    os.symlink(outside, link)
    inner_link = folder / "inner_link.png"
    os.symlink(image_dir["good"], inner_link)

    # All readable without confinement.
    for value in (str(outside), "../outside.png", "../images2/a.png", "link.png"):
        assert inspect_image(value, image_root=folder).ok, value

    reads = []
    real_read = images_module._read_path
    monkeypatch.setattr(images_module, "_read_path", lambda path: reads.append(path) or real_read(path))
    refused = [
        (str(outside), str(outside)),
        ("../outside.png", str(outside)),
        ("../images2/a.png", str(sibling / "a.png")),
        ("link.png", f"{link} (-> {outside})"),
        ({"bytes": None, "path": "../outside.png"}, str(outside)),
    ]
    for value, named in refused:
        check = inspect_image(value, image_root=folder, confine_to=folder)
        assert check.reason == IMAGE_OUTSIDE_FOLDER, value
        assert check.detail == (
            f"{named} lies outside the dataset folder {folder}; to read it, set data.allow_images_outside=true "
            "in the recipe (corl eval: --allow-images-outside)"
        )
        with pytest.raises(ImageDecodeError) as info:
            to_rgb_image(value, image_root=folder, confine_to=folder)
        assert info.value.reason == IMAGE_OUTSIDE_FOLDER
    assert reads == []  # refused before the file was opened

    # Inside the folder (a link to a file inside counts), and in-memory bytes: never refused.
    for value in ("good.png", str(image_dir["good"]), "sub/../good.png", "inner_link.png", png_bytes(seed=9)):
        assert inspect_image(value, image_root=folder, confine_to=folder).ok, value
    assert inspect_image("missing.png", image_root=folder, confine_to=folder).reason == MISSING_IMAGE_FILE


@pytest.mark.parametrize("limit", [100, 400])  # 24 x 24 = 576 pixels: over 2x the limit (PIL's error), and under
def test_decompression_bomb_is_refused_not_warned(image_dir, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check = inspect_image(str(image_dir["good"]))
    assert check.reason == UNREADABLE_IMAGE
    assert check.detail.startswith(f"{image_dir['good']}: image too large to decode safely (Image size (576 pixels)")
    assert f"limit of {2 * limit if limit == 100 else limit} pixels" in check.detail
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert warnings.filters == filters_before  # the error filter lived only inside the decode
    with pytest.raises(ImageDecodeError, match="image too large"):
        to_rgb_image(image_dir["good"].read_bytes())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 576)
    assert inspect_image(str(image_dir["good"])).ok  # at the limit: fine


def test_unidentified_image_detail_names_the_file(image_dir):
    check = inspect_image(str(image_dir["garbage"]))
    assert check.detail == f"{image_dir['garbage']}: not an image file (unknown format or damaged header)"
    assert "BytesIO" not in check.detail
    truncated = inspect_image(str(image_dir["truncated"]))
    assert truncated.detail.startswith(f"{image_dir['truncated']}: OSError: image file is truncated")
