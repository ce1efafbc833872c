"""Bad datasets given to `corl train` as `data.source=FILE`: a file that cannot be read as rows is one
error naming the file (and line); a bad row is skipped, counted and logged while the run goes on; image
paths that leave the dataset's folder or point at the network are never read."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

RECIPE = "shapes-tiny/oe"




def rows_file(fuzz, rows: list[dict], name: str = "data/train.jsonl", good: int = 4):
    """`rows` after `good` usable rows (images in data/images/), as one jsonl file. Every row has the
    `category` column the shipped recipe spreads its batches over (data.stratify_by)."""
    rows = [{**row, "category": "counting"} for row in rows]
    for i in range(good):
        fuzz.write(f"data/images/good{i}.png", fuzz.png(i))
    usable = [{"image": f"images/good{i}.png", "question": f"How many shapes? ({i})", "solution": "two",
               "category": "counting"} for i in range(good)]
    return fuzz.write(name, "".join(json.dumps(row) + "\n" for row in usable + rows))


def train(fuzz, source, *overrides: str):
    return fuzz.train(RECIPE, "run", f"data.source={source}", *overrides)


# ------------------------------------------------------------------------ files that are not rows

FILE_ERRORS = [
    ("empty.jsonl", b"", ("empty.jsonl", "empty")),
    ("blank.jsonl", b"\n  \n\n", ("blank.jsonl", "empty")),
    ("broken.jsonl", b'{"question": "a", "solution": "b"}\n{"question": "a", "solution": "b"}\n{"question": \n',
     ("broken.jsonl", "line 3")),
    ("latin1.jsonl", b'{"question": "a", "solution": "b"}\n{"question": "caf\xe9", "solution": "b"}\n',
     ("latin1.jsonl", "line 2", "UTF-8")),
    ("list.jsonl", b'{"question": "a", "solution": "b"}\n["question", "solution"]\n', ("list.jsonl", "line 2")),
    ("empty.csv", b"", ("empty.csv",)),
    ("garbage.parquet", os.urandom(256), ("garbage.parquet",)),
]


@pytest.mark.parametrize(("name", "data", "names"), FILE_ERRORS, ids=[n for n, _, _ in FILE_ERRORS])
def test_unreadable_data_file_is_named(fuzz, name, data, names):
    fuzz.expect_error(train(fuzz, fuzz.write(f"data/{name}", data)), names)


def test_missing_data_file_is_named(fuzz):
    fuzz.expect_error(train(fuzz, "data/nowhere.jsonl"), "nowhere.jsonl")


def test_glob_matching_nothing_is_named(fuzz):
    fuzz.expect_error(train(fuzz, "'data/*.jsonl'"), "data/*.jsonl")


def test_missing_column_is_named(fuzz):
    source = fuzz.write("data/train.jsonl", json.dumps({"image": "a.png", "solution": "two"}) + "\n")
    fuzz.expect_error(train(fuzz, source), "question")


def test_column_of_numbers_is_named(fuzz):
    source = fuzz.write("data/train.jsonl", json.dumps({"image": "a.png", "question": 3, "solution": "t"}) + "\n")
    fuzz.expect_error(train(fuzz, source), "question")


def test_no_usable_row_is_an_error_with_the_reasons(fuzz):
    source = rows_file(fuzz, [{"image": "images/none.png", "question": "q", "solution": "s"}] * 3, good=0)
    fuzz.expect_error(train(fuzz, source), ("no usable training rows", "missing_image_file"))


def test_split_the_dataset_lacks_is_named(fuzz):
    fuzz.expect_error(fuzz.train("shapes-tiny/oe", "run", "data.split=validation"), "validation")


# ------------------------------------------------------------------------- rows that are skipped

SKIPPED_ROWS = [
    ("empty_question", {"image": "images/good0.png", "question": "  ", "solution": "two"}, "empty_question"),
    ("empty_solution", {"image": "images/good0.png", "question": "q?", "solution": ""}, "empty_solution"),
    ("missing_image", {"image": None, "question": "q?", "solution": "two"}, "missing_image"),
    ("missing_file", {"image": "images/nowhere.png", "question": "q?", "solution": "two"}, "missing_image_file"),
    ("http", {"image": "http://example.com/a.png", "question": "q?", "solution": "two"}, "remote_image"),
    ("s3", {"image": "s3://bucket/a.png", "question": "q?", "solution": "two"}, "remote_image"),
    ("etc_passwd", {"image": "/etc/passwd", "question": "q?", "solution": "two"}, "image_outside_dataset_folder"),
    ("dotdot", {"image": "../outside.png", "question": "q?", "solution": "two"}, "image_outside_dataset_folder"),
]


@pytest.mark.parametrize(("case", "row", "reason"), SKIPPED_ROWS, ids=[c for c, _, _ in SKIPPED_ROWS])
def test_bad_row_is_skipped_and_counted(fuzz, case, row, reason):
    fuzz.write("outside.png", fuzz.png(9))
    result = train(fuzz, rows_file(fuzz, [row]))
    fuzz.skipped(result, "skipped 1 of 5 rows", reason)
    assert (fuzz.tmp / "run" / "checkpoint-1" / "model.safetensors").is_file()


BAD_IMAGES = {  # kind -> the file's bytes
    "garbage": lambda fuzz: os.urandom(300),
    "truncated": lambda fuzz: fuzz.png(3, size=64)[:200],
    "empty": lambda fuzz: b"",
    "text": lambda fuzz: b"not an image at all\n",
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_unreadable_image_row_is_skipped(fuzz, kind):
    fuzz.write(f"data/images/{kind}.png", BAD_IMAGES[kind](fuzz))
    result = train(fuzz, rows_file(fuzz, [{"image": f"images/{kind}.png", "question": "q?", "solution": "t"}]))
    fuzz.skipped(result, "skipped 1 of 5 rows", "empty_image_file" if kind == "empty" else "unreadable_image")


def test_decompression_bomb_row_is_skipped(fuzz, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # a 48 x 48 image then counts as a bomb
    fuzz.write("data/images/bomb.png", fuzz.png(4, size=48))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    rows = [{"image": "images/bomb.png", "question": "q?", "solution": "t"}]
    source = rows_file(fuzz, rows)
    for i in range(4):  # the usable rows must stay under the limit: 12 x 12
        fuzz.write(f"data/images/good{i}.png", fuzz.png(i, size=12))
    fuzz.skipped(train(fuzz, source), "skipped 1 of 5 rows", "too large")


def test_symlink_leading_out_of_the_folder_is_skipped_unread(fuzz):
    secret = fuzz.write("secret.png", fuzz.png(7))
    (fuzz.tmp / "data" / "images").mkdir(parents=True)
    os.symlink(secret, fuzz.tmp / "data" / "images" / "link.png")
    source = rows_file(fuzz, [{"image": "images/link.png", "question": "q?", "solution": "t"}])
    fuzz.skipped(train(fuzz, source), "skipped 1 of 5 rows", "image_outside_dataset_folder")


def test_outside_images_are_read_when_the_recipe_allows(fuzz):
    fuzz.write("outside.png", fuzz.png(9))
    source = rows_file(fuzz, [{"image": "../outside.png", "question": "q?", "solution": "two"}])
    result = fuzz.expect_ok(train(fuzz, source, "data.allow_images_outside=true"))
    assert "image_outside_dataset_folder" not in result.text


# ------------------------------------------------------------------------------ the same in corl eval


def test_eval_skips_and_counts_the_same_bad_rows(fuzz):
    rows = [{"image": "http://example.com/a.png", "question": "How many? (A) one (B) two", "solution": "B"},
            {"image": "/etc/passwd", "question": "How many? (A) one (B) two", "solution": "B"}]
    source = rows_file(fuzz, rows)
    result = fuzz.run("eval", "--suite", "oe", "--data", source, "--model", fuzz.model, "--out", "e.json",
                      "--max-new-tokens", "4")
    fuzz.skipped(result, "remote_image", "image_outside_dataset_folder")
    skipped = json.loads((fuzz.tmp / "e.json").read_text())["skipped"]
    assert skipped["remote_image"] == 1 and skipped["image_outside_dataset_folder"] == 1


def test_eval_names_an_unreadable_data_file(fuzz):
    fuzz.error("eval", "--suite", "oe", "--data", fuzz.write("data/bad.jsonl", b'{"question": \n'),
               "--model", fuzz.model, "--out", "e.json", names=("bad.jsonl", "not valid JSON"))
