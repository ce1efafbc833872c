import logging
import os
import socket
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from corl.data.loading import load_rows, prepare_rows

MC_QUESTION = "What color is the circle?\nA. red\nB. blue"
OE_QUESTION = "What color is the circle?"


def unified_row(i: int, image, **overrides) -> dict:
    row = {
        "prompt": f"a red circle number {i}",
        "image": image,
        "question": MC_QUESTION if i % 2 == 0 else OE_QUESTION,
        "solution": "<answer>A</answer>" if i % 2 == 0 else "<answer>red</answer>",
        "question_type": "mc" if i % 2 == 0 else "oe",
        "category": f"cat{i}",
    }
    row.update(overrides)
    return row


def stage1_row(i: int, image) -> dict:
    return {
        "prompt": f"a blue square {i}",
        "real_image": image,
        "qa_problem": MC_QUESTION if i % 2 == 0 else OE_QUESTION,
        "qa_solution": "<answer>B</answer>" if i % 2 == 0 else "<answer>blue</answer>",
        "qa_type": "MC" if i % 2 == 0 else "OE",
        "scene": f"scene{i}",
    }


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "hf_cache")


def test_jsonl_with_image_folder_skips_every_broken_image(tmp_path, image_dir, cache, write_jsonl):
    # Relative paths resolve against the jsonl's folder; absolute paths are used as they are.
    rows = [
        unified_row(0, "images/good.png"),
        unified_row(1, "images/truncated.png"),
        unified_row(2, str(image_dir["good2"])),  # absolute
        unified_row(3, "images/garbage.png"),
        unified_row(4, "images/empty.png"),
        unified_row(5, "images/missing.png"),
        unified_row(6, "images/rgba.png"),
        unified_row(7, None),
        unified_row(8, "images/gray.png"),
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    loaded = load_rows(str(path), task="unified", cache_dir=cache)
    report = loaded.report

    assert report.rows_read == 9
    assert report.rows_kept == 4
    assert report.skipped == {
        "empty_image_file": 1,
        "missing_image": 1,
        "missing_image_file": 1,
        "unreadable_image": 2,
    }
    assert [(s.index, s.reason) for s in report.first_skipped] == [
        (1, "unreadable_image"),
        (3, "unreadable_image"),
        (4, "empty_image_file"),
        (5, "missing_image_file"),
        (7, "missing_image"),
    ]
    assert "missing.png" in report.first_skipped[3].detail
    # Iterating the whole result cannot fail and yields RGB images with the right pixels.
    assert loaded.dataset["category"] == ["cat0", "cat2", "cat6", "cat8"]
    images = [row["image"] for row in loaded.dataset]
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in images)
    expected = np.asarray(Image.open(image_dir["good2"]).convert("RGB"))
    assert np.array_equal(np.asarray(images[1]), expected)


def test_image_root_overrides_default(tmp_path, image_dir, cache, write_jsonl):
    path = write_jsonl(tmp_path / "rows.jsonl", [unified_row(0, "good.png"), unified_row(1, "rgba.png")])
    without_root = load_rows(str(path), task="unified", cache_dir=cache)
    assert without_root.report.skipped == {"missing_image_file": 2}
    root = str(image_dir["good"].parent)
    with_root = load_rows(str(path), task="unified", image_root=root, cache_dir=cache)
    assert with_root.report.rows_kept == 2


def test_empty_prompt_and_question_are_skipped_and_counted(tmp_path, image_dir, cache, write_jsonl):
    good = str(image_dir["good"])
    rows = [
        unified_row(0, good),
        unified_row(1, good, prompt=""),
        unified_row(2, good, prompt="   \n"),
        unified_row(3, good, prompt=None),
        unified_row(4, good, question="  "),
        unified_row(5, good, solution=""),
        unified_row(6, "images/garbage.png", prompt=""),  # counted once, under the first problem
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    report = load_rows(str(path), task="unified", cache_dir=cache).report
    assert report.skipped == {"empty_prompt": 4, "empty_question": 1, "empty_solution": 1}
    assert report.rows_kept == 1 and report.rows_skipped == 6

    # Understanding tasks do not need prompts: blank prompts are kept there.
    mc = load_rows(str(path), task="mc", question_type=None, cache_dir=cache).report
    assert mc.skipped == {
        "empty_question": 1, "empty_solution": 1, "unreadable_image": 1, "wrong_question_type": 2
    }


def test_skips_are_logged_as_warning_with_counts(tmp_path, image_dir, cache, caplog, write_jsonl):
    rows = [unified_row(0, str(image_dir["good"])), unified_row(1, str(image_dir["empty"]), prompt="")]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="corl.data.loading"):
        load_rows(str(path), task="unified", cache_dir=cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 1 of 2 rows" in warnings[0] and "empty_prompt: 1" in warnings[0]


def test_parquet_round_trip_stage1_layout(tmp_path, image_dir):
    # Upstream stage-1 names, images stored as a datasets Image feature (bytes embedded).
    rows = [stage1_row(i, str(image_dir["good"] if i != 2 else image_dir["truncated"])) for i in range(4)]
    source = datasets.Dataset.from_list(rows).cast_column("real_image", datasets.Image())
    path = tmp_path / "stage1.parquet"
    source.to_parquet(str(path))

    loaded = load_rows(str(path), task="unified", cache_dir=str(tmp_path / "cache"))
    ds = loaded.dataset
    assert loaded.report.layout == "corl-stage1"
    assert loaded.report.column_map["image"] == "real_image"
    assert loaded.report.skipped == {"unreadable_image": 1}
    assert set(ds.column_names) == {"prompt", "image", "question", "solution", "question_type", "scene"}
    assert ds["question_type"] == ["mc", "oe", "oe"]  # "MC"/"OE" normalized; row 2 dropped
    assert ds["scene"] == ["scene0", "scene1", "scene3"]
    assert ds["solution"][0] == "<answer>B</answer>"
    assert loaded.report.question_type_from == "column"
    assert ds[2]["image"].mode == "RGB"


def test_stage2_layout_for_mc_task(tmp_path, image_dir):
    data = image_dir["good"].read_bytes()
    table = datasets.Dataset.from_dict(
        {
            "image": [data, data, b"garbage"],  # raw bytes column
            "problem": [MC_QUESTION] * 3,
            "solution": ["<answer>A</answer>"] * 3,
        }
    )
    table.save_to_disk(str(tmp_path / "mcq"))
    loaded = load_rows(str(tmp_path / "mcq"), task="mc")
    assert loaded.report.layout == "corl-stage2"
    assert loaded.report.question_type_from == "task"
    assert loaded.dataset["question_type"] == ["mc", "mc"]
    assert loaded.dataset["question"] == [MC_QUESTION] * 2
    assert loaded.report.skipped == {"unreadable_image": 1}
    assert loaded.dataset[0]["image"].size == (24, 24)


def test_save_to_disk_dataset_dict_picks_split(tmp_path, image_dir):
    image = Image.open(image_dir["rgba"])
    train = datasets.Dataset.from_list([unified_row(i, image) for i in range(3)])
    test = datasets.Dataset.from_list([unified_row(i, image) for i in range(2)])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))

    assert len(load_rows(str(tmp_path / "dd"), split="test").dataset) == 2
    loaded = load_rows(str(tmp_path / "dd"), split="train")
    assert len(loaded.dataset) == 3
    assert loaded.dataset[0]["image"].mode == "RGB"
    with pytest.raises(ValueError, match=r"no split 'validation'; available splits: \['train', 'test'\]"):
        load_rows(str(tmp_path / "dd"), split="validation")


def test_arrow_file(tmp_path, image_dir):
    table = datasets.Dataset.from_list([unified_row(i, str(image_dir["good"])) for i in range(3)])
    table.save_to_disk(str(tmp_path / "saved"))
    arrow_files = sorted((tmp_path / "saved").glob("*.arrow"))
    # The images lie beside saved/, not inside it: refused unless allowed.
    refused = load_rows(str(arrow_files[0]), task="unified")
    assert refused.report.skipped == {"image_outside_dataset_folder": 3}
    loaded = load_rows(str(arrow_files[0]), task="unified", allow_images_outside=True)
    assert loaded.report.rows_kept == 3


def test_in_memory_dataset_with_pil_images():
    images = [Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)) for i in range(3)]
    table = datasets.Dataset.from_list([unified_row(i, images[i]) for i in range(3)])
    loaded = load_rows(table, task="unified")
    assert [int(np.asarray(row["image"])[0, 0, 0]) for row in loaded.dataset] == [0, 40, 80]


def test_explicit_mapping_wins(tmp_path, image_dir):
    rows = [
        {**stage1_row(0, str(image_dir["good"])), "caption_v2": "a green triangle", "q2": "How many?"},
    ]
    table = datasets.Dataset.from_list(rows)
    loaded = load_rows(table, column_map={"prompt": "caption_v2", "question": "q2"})
    row = loaded.dataset[0]
    assert row["prompt"] == "a green triangle"
    assert row["question"] == "How many?"
    assert row["solution"] == "<answer>B</answer>"  # others still from the stage-1 layout
    assert loaded.columns.explicit == ("prompt", "question")
    assert "qa_problem" in loaded.dataset.column_names  # the unused upstream column passes through


def test_missing_required_column_error(image_dir):
    table = datasets.Dataset.from_dict({"caption": ["a red circle"], "picture": [str(image_dir["good"])]})
    with pytest.raises(ValueError) as info:
        load_rows(table, task="t2i")
    message = str(info.value)
    assert "'prompt'" in message
    assert "['caption', 'picture']" in message
    assert "column_map={'prompt': 'caption'}" in message
    # The suggested mapping indeed fixes it.
    assert load_rows(table, task="t2i", column_map={"prompt": "caption"}).report.rows_kept == 1


def test_t2i_checks_images_only_when_asked(image_dir):
    table = datasets.Dataset.from_dict(
        {"prompt": ["a", "b", " "], "image": [str(image_dir["good"]), str(image_dir["garbage"]), None]}
    )
    plain = load_rows(table, task="t2i")
    assert plain.report.skipped == {"empty_prompt": 1}
    assert plain.report.question_type_from is None
    assert plain.dataset["image"] == [str(image_dir["good"]), str(image_dir["garbage"])]  # untouched
    visual = load_rows(table, task="t2i", needs_image=True)
    assert visual.report.skipped == {"empty_prompt": 1, "unreadable_image": 1}
    assert visual.dataset[0]["image"].mode == "RGB"


def test_question_type_inferred_constant_and_wrong_type(image_dir):
    good = str(image_dir["good"])
    rows = [{k: v for k, v in unified_row(i, good).items() if k != "question_type"} for i in range(4)]
    table = datasets.Dataset.from_list(rows)

    inferred = load_rows(table, task="unified")
    assert inferred.dataset["question_type"] == ["mc", "oe", "mc", "oe"]
    assert inferred.report.question_type_from == "inferred"
    assert inferred.report.question_types_inferred == 4
    assert inferred.report.question_type_counts == {"mc": 2, "oe": 2}
    # Rows dropped for their image are not counted as inferred.
    broken = table.remove_columns("image").add_column("image", [good, good, None, good])
    assert load_rows(broken, task="unified").report.question_types_inferred == 3

    constant = load_rows(table, task="unified", question_type="OE")
    assert constant.dataset["question_type"] == ["oe"] * 4
    assert constant.report.question_type_from == "constant"

    with pytest.raises(ValueError, match="contradicts task 'mc'"):
        load_rows(table, task="mc", question_type="oe")

    typed = table.add_column("question_type", ["MC", "", "oe", "essay"])
    unified = load_rows(typed, task="unified")
    assert unified.dataset["question_type"] == ["mc", "oe", "oe"]  # blank inferred from the question
    assert unified.report.question_types_inferred == 1
    assert unified.report.skipped == {"unknown_question_type": 1}
    mc_only = load_rows(typed, task="mc")
    assert mc_only.dataset["question_type"] == ["mc", "mc"]  # blank takes the task's type
    assert mc_only.report.skipped == {"unknown_question_type": 1, "wrong_question_type": 1}
    # A recipe constant with a column present filters (as the mc / oe recipes use it on mixed data).
    for task in ("mc", "unified"):
        filtered = load_rows(typed, task=task, question_type="mc")
        assert filtered.dataset["question_type"] == ["mc", "mc"]
        assert filtered.report.skipped == {"unknown_question_type": 1, "wrong_question_type": 1}


def test_limit_and_wrong_column_type(image_dir):
    table = datasets.Dataset.from_list([unified_row(i, str(image_dir["good"])) for i in range(5)])
    limited = load_rows(table, limit=2)
    assert limited.report.rows_read == 2 and len(limited.dataset) == 2
    numbers = table.remove_columns("solution").add_column("solution", list(range(5)))
    with pytest.raises(ValueError, match="column 'solution' must hold text"):
        load_rows(numbers)


def test_path_only_struct_images_are_resolved(tmp_path, image_dir, monkeypatch):
    # {bytes: None, path: relative} values must decode later from any working directory.
    table = datasets.Dataset.from_list(
        [unified_row(i, {"bytes": None, "path": name}) for i, name in enumerate(["good.png", "missing.png"])]
    )
    loaded = load_rows(table, image_root=str(image_dir["good"].parent))
    assert loaded.report.skipped == {"missing_image_file": 1}
    monkeypatch.chdir(tmp_path)
    assert loaded.dataset[0]["image"].size == (24, 24)


def test_local_path_that_does_not_exist_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        load_rows(str(tmp_path / "*.parquet"))


def test_glob_of_parquet_files(tmp_path, png_bytes):
    for part in range(2):
        rows = [unified_row(i, png_bytes(seed=i)) for i in range(part * 3, part * 3 + 3)]
        datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / f"part{part}.parquet"))
    loaded = load_rows(str(tmp_path / "part*.parquet"), cache_dir=str(tmp_path / "cache"))
    assert loaded.report.rows_kept == 6
    assert loaded.dataset["category"] == [f"cat{i}" for i in range(6)]


def test_prepare_rows_on_empty_dataset():
    names = ("prompt", "image", "question", "solution")
    features = datasets.Features(dict.fromkeys(names, datasets.Value("string")))
    table = datasets.Dataset.from_dict({name: [] for name in names}, features=features)
    loaded = prepare_rows(table)
    assert len(loaded) == 0 and loaded.report.rows_read == 0


def test_directory_with_jsonl_and_image_folder(tmp_path, image_dir, cache, write_jsonl):
    # tmp_path holds images/ (8 files) and two jsonl files; datasets alone would read it as an image folder.
    write_jsonl(tmp_path / "train.jsonl", [unified_row(i, "images/good.png") for i in range(3)])
    write_jsonl(tmp_path / "test.jsonl", [unified_row(i, "images/rgba.png") for i in range(2)])
    assert len(load_rows(str(tmp_path), split="train", cache_dir=cache).dataset) == 3
    test = load_rows(str(tmp_path), split="test", cache_dir=cache)
    assert test.report.rows_kept == 2 and test.dataset[0]["image"].mode == "RGB"
    with pytest.raises(ValueError, match="no data file for split 'validation'"):
        load_rows(str(tmp_path), split="validation", cache_dir=cache)


def test_remote_image_rows_are_skipped_and_counted_without_network(tmp_path, image_dir, cache, write_jsonl,
                                                                   monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("a remote image was fetched")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    rows = [
        unified_row(0, "images/good.png"),
        unified_row(1, "http://example.com/cat.png"),
        unified_row(2, "images/rgba.png"),
        unified_row(3, "s3://bucket/dog.png"),
    ]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    loaded = load_rows(str(path), task="unified", cache_dir=cache)
    assert loaded.report.skipped == {"remote_image": 2}
    assert loaded.dataset["category"] == ["cat0", "cat2"]
    assert [(s.index, s.reason) for s in loaded.report.first_skipped] == [(1, "remote_image"), (3, "remote_image")]
    assert loaded.report.first_skipped[1].detail.startswith("s3://bucket/dog.png: remote images are not downloaded")


@pytest.fixture
def escaping_rows(tmp_path, image_dir, png_bytes, write_jsonl):
    """data/rows.jsonl with data/images/good.png, and three rows that point outside data/: an absolute path,
    a ../ path and a symlink inside data/images/ that leads out."""
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "good.png").write_bytes(image_dir["good"].read_bytes())
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(seed=11))
    os.symlink(secret, data / "images" / "link.png")
    rows = [
        unified_row(0, "images/good.png"),
        unified_row(1, str(secret)),
        unified_row(2, "../secret.png"),
        unified_row(3, "images/link.png"),
    ]
    return write_jsonl(data / "rows.jsonl", rows), secret


def test_image_paths_outside_the_dataset_folder_are_refused(escaping_rows, cache, monkeypatch):
    path, secret = escaping_rows
    import corl.data.images as images_module

    reads = []
    real_read = images_module._read_path
    monkeypatch.setattr(images_module, "_read_path", lambda p: reads.append(p) or real_read(p))
    loaded = load_rows(str(path), task="unified", cache_dir=cache)
    assert loaded.report.skipped == {"image_outside_dataset_folder": 3}
    assert loaded.dataset["category"] == ["cat0"]
    assert str(secret) not in reads  # refused unread
    detail = loaded.report.first_skipped[0].detail
    assert str(secret) in detail and str(path.parent) in detail and "data.allow_images_outside=true" in detail

    allowed = load_rows(str(path), task="unified", cache_dir=cache, allow_images_outside=True)
    assert allowed.report.skipped == {}
    assert allowed.report.rows_kept == 4
    assert allowed.dataset[3]["image"].size == (24, 24)


def test_confinement_follows_the_image_root(tmp_path, image_dir, escaping_rows):
    _, secret = escaping_rows
    folder = str(image_dir["good"].parent)
    table = datasets.Dataset.from_list([unified_row(0, "good.png"), unified_row(1, str(secret))])
    # An in-memory dataset without image_root: paths are the caller's own, nothing to confine to.
    free = datasets.Dataset.from_list([unified_row(0, str(image_dir["good"])), unified_row(1, str(secret))])
    assert load_rows(free).report.rows_kept == 2
    # An explicit image_root confines.
    confined = load_rows(table, image_root=folder)
    assert confined.report.skipped == {"image_outside_dataset_folder": 1}
    assert load_rows(table, image_root=folder, allow_images_outside=True).report.rows_kept == 2
    # Embedded bytes are never confined.
    embedded = datasets.Dataset.from_list([unified_row(0, secret.read_bytes())])
    assert load_rows(embedded, image_root=folder).report.rows_kept == 1


def test_decompression_bomb_rows_are_skipped(tmp_path, image_dir, cache, write_jsonl, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # the 24 x 24 test images hold 576
    path = write_jsonl(tmp_path / "rows.jsonl", [unified_row(i, "images/good.png") for i in range(3)])
    report = load_rows(str(path), task="unified", cache_dir=cache, num_workers=2).report
    assert report.skipped == {"unreadable_image": 3}
    assert "image too large to decode safely (Image size (576 pixels)" in report.first_skipped[0].detail
    assert str(image_dir["good"]) in report.first_skipped[0].detail


GOOD_LINE = '{"prompt": "p", "image": "images/good.png", "question": "q?", "solution": "<answer>a</answer>"}\n'


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "data file {path} is empty: it holds no rows"),
        (b"  \n\n\t\n", "data file {path} is empty: it holds no rows"),
        (GOOD_LINE.encode() + b'{"prompt": "caf\xe9"}\n',
         "{path} line 2 is not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"),
        ((GOOD_LINE * 2).encode() + b'{"prompt": "a",, }\n' + GOOD_LINE.encode(),
         "{path} line 3 is not valid JSON: Expecting property name enclosed in double quotes (column 16)"),
        (GOOD_LINE.encode() + b"\n" + b'["a", "b"]\n',
         "{path} line 3 is an array, not a JSON object; each line must be one row as a JSON object {{...}}"),
        (GOOD_LINE.encode() + b'"just text"\n',
         "{path} line 2 is a string, not a JSON object; each line must be one row as a JSON object {{...}}"),
        (b'[\n  {"prompt": "a"},\n  {"prompt": "b"}\n  {"prompt": "c"}\n]\n',
         "{path} line 4 is not valid JSON: Expecting ',' delimiter (column 3)"),
        (b'[{"prompt": "a"}, 3]', "{path}: item 2 of its JSON array is a number, not an object; each row must be "
                                  "a JSON object {{...}}"),
    ],
    ids=["zero-bytes", "whitespace", "not-utf8", "malformed", "json-list", "json-string", "bad-document",
         "document-item"],
)
def test_bad_json_lines_are_one_clear_error(tmp_path, cache, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_rows(str(path), cache_dir=cache)
    assert str(info.value) == message.format(path=path)


def test_json_document_and_bom_are_accepted(tmp_path, image_dir, cache):
    rows = "[\n  " + ",\n  ".join(GOOD_LINE.strip() for _ in range(2)) + "\n]\n"
    (tmp_path / "rows.json").write_text(rows)
    assert load_rows(str(tmp_path / "rows.json"), cache_dir=cache).report.rows_kept == 2
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (GOOD_LINE * 2).encode())
    assert load_rows(str(tmp_path / "bom.jsonl"), cache_dir=cache).report.rows_kept == 2


def test_unreadable_csv_and_parquet_are_one_clear_error(tmp_path, cache):
    empty = tmp_path / "rows.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"^data file {empty} is empty"):
        load_rows(str(empty), cache_dir=cache)
    broken = tmp_path / "rows2.csv"
    broken.write_text('prompt,image\n"a,images/good.png\n')  # an unclosed quote
    with pytest.raises(ValueError, match=f"^could not read data file {broken}: ParserError: "):
        load_rows(str(broken), cache_dir=cache)
    garbage = tmp_path / "rows.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match=f"^could not read data file {garbage}: ArrowInvalid: "):
        load_rows(str(garbage), cache_dir=cache)


@pytest.mark.parametrize("rank, drawn", [("0", True), ("1", False)])
def test_only_rank_zero_draws_the_checking_bar(monkeypatch, capsys, rank, drawn):
    """Under a launcher every rank checks its rows, but one bar is enough (the others would repeat it)."""
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    images = [Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)) for i in range(3)]
    load_rows(datasets.Dataset.from_list([unified_row(i, images[i]) for i in range(3)]), task="unified")
    assert ("checking rows" in capsys.readouterr().err) == drawn
