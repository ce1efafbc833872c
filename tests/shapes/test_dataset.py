import io
import random

import pytest
from datasets import load_from_disk
from PIL import Image

from corl.shapes.captions import caption_for
from datasets import Dataset, DatasetDict

from corl.shapes.dataset import FEATURES, balanced_plan, build_shapes_dataset, summarize, train_overlap
from corl.shapes.render import render_scene
from corl.shapes.scene import CATEGORIES, Scene


@pytest.fixture(scope="module")
def small():
    return build_shapes_dataset(60, 24, seed=3)


def test_schema_and_balance(small):
    assert set(small) == {"train", "test"}
    assert len(small["train"]) == 60 and len(small["test"]) == 24
    for split in small.values():
        assert split.features == FEATURES
        summary = summarize(split)
        assert set(summary["category"]) == set(CATEGORIES)
        assert max(summary["category"].values()) - min(summary["category"].values()) <= 1
        assert abs(summary["question_type"]["mc"] - summary["question_type"]["oe"]) <= 1


def test_rows_are_consistent(small):
    for row in small["train"]:
        scene = Scene.from_json(row["scene"])
        assert scene.category == row["category"]
        assert isinstance(row["image"], Image.Image) and row["image"].size == (48, 48)
        assert row["image"].convert("RGB").tobytes() == render_scene(scene).tobytes()
        assert row["solution"].startswith("<answer>") and row["solution"].endswith("</answer>")
        assert ("\nA. " in row["question"]) == (row["question_type"] == "mc")
        for o in scene.objects:
            assert o.shape in row["prompt"]


def test_build_is_deterministic(small):
    again = build_shapes_dataset(60, 24, seed=3)
    for name in ("train", "test"):
        a, b = small[name], again[name]
        for col in ("prompt", "question", "solution", "question_type", "category", "scene"):
            assert a[col] == b[col]
        assert [im.tobytes() for im in a["image"]] == [im.tobytes() for im in b["image"]]
    other = build_shapes_dataset(60, 24, seed=4)
    assert other["train"]["scene"] != small["train"]["scene"]
    # The train split does not depend on the test size.
    assert build_shapes_dataset(60, 5, seed=3)["train"]["scene"] == small["train"]["scene"]


def test_test_split_avoids_train_pairs(small):
    train_pairs = set(zip(small["train"]["prompt"], small["train"]["scene"]))
    assert not train_pairs & set(zip(small["test"]["prompt"], small["test"]["scene"]))


def test_train_overlap_counts_repeated_scenes_and_questions():
    def split(rows):
        return Dataset.from_dict({k: [r[i] for r in rows] for i, k in enumerate(("scene", "question", "question_type"))})

    train = split([("s1", "q1", "oe"), ("s2", "q2", "mc"), ("s3", "q3", "oe")])
    # s1 with its train question (oe), s2 with its train question (mc), s3 with another question, s4 new.
    test = split([("s1", "q1", "oe"), ("s2", "q2", "mc"), ("s3", "qx", "oe"), ("s4", "q1", "oe")])
    counts = train_overlap(DatasetDict({"train": train, "test": test}))
    assert counts == {"scene": 3, "scene_question": 2, "scene_question/oe": 1, "scene_question/mc": 1}


def test_train_overlap_of_a_real_build(small):
    counts = train_overlap(small)
    train_pairs = set(zip(small["train"]["scene"], small["train"]["question"]))
    expected = sum(p in train_pairs for p in zip(small["test"]["scene"], small["test"]["question"]))
    assert counts["scene_question"] == expected
    assert counts["scene"] >= expected


def test_save_load_round_trip(small, tmp_path):
    small.save_to_disk(str(tmp_path / "ds"))
    loaded = load_from_disk(str(tmp_path / "ds"))
    assert loaded["test"]["prompt"] == small["test"]["prompt"]
    assert loaded["test"][0]["image"].tobytes() == small["test"][0]["image"].tobytes()
    buf = io.BytesIO()
    loaded["train"][0]["image"].save(buf, format="PNG")
    assert buf.tell() > 0


def test_image_size_and_bad_arguments():
    ds = build_shapes_dataset(6, 0, seed=0, image_size=32)
    assert ds["train"][0]["image"].size == (32, 32) and len(ds["test"]) == 0
    with pytest.raises(ValueError):
        build_shapes_dataset(-1, 0)
    with pytest.raises(ValueError):
        build_shapes_dataset(6, 0, image_size=7)


def test_balanced_plan_is_balanced():
    plan = balanced_plan(120, random.Random(0))
    assert {c: sum(p[0] == c for p in plan) for c in CATEGORIES} == {c: 20 for c in CATEGORIES}
    for c in CATEGORIES:
        assert sum(p == (c, "mc") for p in plan) == 10


def test_caption_column_matches_scene_wording(small):
    # The prompt is a caption of its scene: re-captioning with many seeds must reproduce it.
    row = small["train"][0]
    scene = Scene.from_json(row["scene"])
    assert row["prompt"] in {caption_for(scene, random.Random(i)) for i in range(200)}
