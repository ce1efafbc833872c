"""corl.eval.image_dumps: GenEval / DPG-Bench / WISE prompt files in, image folders out.

Tiny fixture files follow each benchmark's published format; the `*_scorer_view` helpers read the output
the way the official scorers enumerate it (GenEval evaluate_images.py, ELLA compute_dpg_bench.py,
WISE gpt_eval.py), so a layout mistake shows up as a test failure.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from corl.eval.image_dumps import (
    dump_images,
    read_dpg_prompts,
    read_geneval_metadata,
    read_prompts,
    read_wise_prompts,
)

from .helpers import GENEVAL_LINES, FakePolicy


@pytest.fixture
def geneval_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts" / "evaluation_metadata.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(line) for line in GENEVAL_LINES) + "\n")
    return path


@pytest.fixture
def dpg_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "dpg_prompts"
    folder.mkdir()
    for name, text in {
        "1": "An eye-catching red pickup truck.",
        "256": "A quiet lake at dawn.",
        "partiprompts12": "A teapot on a table.",
    }.items():
        (folder / f"{name}.txt").write_text(text + "\n")
    return folder


@pytest.fixture
def wise_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "wise"
    folder.mkdir()
    culture = [
        {
            "prompt_id": 1,
            "Prompt": "The plant often gifted on Mother's Day",
            "Explanation": "Carnation",
            "Subcategory": "Festival",
            "Category": "Cultural knowledge",
        },
        {
            "prompt_id": 2,
            "Prompt": "Traditional food of the Dragon Boat Festival",
            "Explanation": "Zongzi",
            "Subcategory": "Festival",
            "Category": "Cultural knowledge",
        },
    ]
    science = [
        {
            "prompt_id": 801,
            "Prompt": "Ice cube after an hour in the sun",
            "Explanation": "a puddle",
            "Subcategory": "Physics",
            "Category": "Natural Science",
        }
    ]
    paths = [folder / "cultural_common_sense.json", folder / "natural_science.json"]
    paths[0].write_text(json.dumps(culture))
    paths[1].write_text(json.dumps(science))
    return paths


def geneval_scorer_view(imagedir: Path) -> list[tuple[dict, str]]:
    """(metadata, image path) pairs as GenEval's evaluate_images.py main() finds them."""
    found = []
    for sub in sorted(os.listdir(imagedir)):
        folder = imagedir / sub
        if not folder.is_dir() or not sub.isdigit():
            continue
        with open(folder / "metadata.jsonl") as fp:
            metadata = json.load(fp)
        for name in sorted(os.listdir(folder / "samples")):
            if (folder / "samples" / name).is_file() and re.match(r"\d+\.png", name):
                found.append((metadata, str(folder / "samples" / name)))
    return found


def dpg_scorer_view(imagedir: Path, resolution: int) -> dict[str, list[Image.Image]]:
    """item id -> its 4 tiles, cropped as compute_dpg_bench.py does."""
    boxes = [
        (0, 0, resolution, resolution),
        (resolution, 0, 2 * resolution, resolution),
        (0, resolution, resolution, 2 * resolution),
        (resolution, resolution, 2 * resolution, 2 * resolution),
    ]
    out = {}
    for name in os.listdir(imagedir):
        image = Image.open(imagedir / name)
        out[name.split(".")[0]] = [image.crop(box) for box in boxes]
    return out


def test_read_geneval(geneval_file):
    items = read_geneval_metadata(geneval_file)
    assert [it.key for it in items] == ["00000", "00001", "00002"]
    assert [it.prompt for it in items] == [line["prompt"] for line in GENEVAL_LINES]
    assert read_geneval_metadata(geneval_file.parent)[1].record == GENEVAL_LINES[1]  # folder accepted


def test_geneval_layout(geneval_file, tmp_path):
    policy = FakePolicy()
    out = tmp_path / "geneval_images"
    report = dump_images(
        policy,
        "geneval",
        read_prompts("geneval", geneval_file),
        out,
        images_per_prompt=4,
        batch_size=2,
        seed=1,
    )
    view = geneval_scorer_view(out)
    assert len(view) == 3 * 4
    assert [m for m, _ in view[::4]] == GENEVAL_LINES  # folder N holds line N of the metadata file
    assert sorted(os.listdir(out / "00001" / "samples")) == ["0000.png", "0001.png", "0002.png", "0003.png"]
    assert (out / "00000" / "grid.png").is_file()
    assert Image.open(out / "00000" / "grid.png").size == (4 * 48, 48)
    assert (report.n_written, report.n_skipped_existing, report.tile_size) == (3, 0, [48, 48])
    assert [c["n"] for c in policy.image_calls] == [4, 4]
    assert not list(out.rglob(".*tmp"))


def test_geneval_resume_skips_complete_batches_and_is_identical(geneval_file, tmp_path):
    items = read_geneval_metadata(geneval_file)
    full = tmp_path / "full"
    dump_images(FakePolicy(), "geneval", items, full, batch_size=2, seed=5)
    partial = tmp_path / "partial"
    dump_images(FakePolicy(), "geneval", items[:2], partial, batch_size=2, seed=5)
    (partial / "00001" / "metadata.jsonl").unlink()  # as if interrupted before the folder was complete
    policy = FakePolicy()
    report = dump_images(policy, "geneval", items, partial, batch_size=2, seed=5)
    assert report.n_skipped_existing == 0 and len(policy.image_calls) == 2
    again = FakePolicy()
    report = dump_images(again, "geneval", items, partial, batch_size=2, seed=5)
    assert report.n_skipped_existing == 3 and again.image_calls == []
    for path in full.rglob("*.png"):
        assert list(Image.open(path).getdata()) == list(
            Image.open(partial / path.relative_to(full)).getdata()
        )


def test_dpg_layout(dpg_dir, tmp_path):
    items = read_dpg_prompts(dpg_dir)
    assert [it.key for it in items] == ["1", "256", "partiprompts12"]
    assert items[0].prompt == "An eye-catching red pickup truck."
    out = tmp_path / "dpg_images"
    report = dump_images(FakePolicy(), "dpg", items, out, batch_size=2)
    assert sorted(os.listdir(out)) == ["1.png", "256.png", "partiprompts12.png"]  # nothing else in the folder
    tiles = dpg_scorer_view(out, resolution=report.tile_size[0])
    assert set(tiles) == {"1", "256", "partiprompts12"}
    # Tile k of the grid is image k of the prompt (FakePolicy colors encode the image index).
    first = tiles["1"]
    expected = FakePolicy().generate_images(
        [it.prompt for it in items[:2]], n=4, seed=report.seed * 1_000_003
    )
    assert [t.getpixel((5, 5)) for t in first] == [im.getpixel((5, 5)) for im in expected[:4]]
    with pytest.raises(ValueError, match="needs 4 image"):
        dump_images(FakePolicy(), "dpg", items, out, images_per_prompt=2)


def test_wise_layout(wise_files, tmp_path):
    items = read_wise_prompts(wise_files[0].parent)
    assert sorted(it.key for it in items) == ["1", "2", "801"]
    out = tmp_path / "wise_images"
    dump_images(FakePolicy(), "wise", items, out)
    for path in wise_files:  # gpt_eval.py looks for <image_dir>/<prompt_id>.png
        for entry in json.loads(path.read_text()):
            assert (out / f"{entry['prompt_id']}.png").is_file()
    assert len(os.listdir(out)) == 3


def test_bad_prompt_files(tmp_path, wise_files):
    bad = tmp_path / "evaluation_metadata.jsonl"
    bad.write_text('{"prompt": "a cat"}\n')
    with pytest.raises(ValueError, match="'tag'"):
        read_geneval_metadata(bad)
    with pytest.raises(FileNotFoundError):
        read_dpg_prompts(tmp_path / "missing")
    with pytest.raises(ValueError, match="appears in both"):
        read_wise_prompts([wise_files[0], wise_files[0]])
    with pytest.raises(ValueError, match="unknown image benchmark"):
        read_prompts("t2i-compbench", tmp_path)
