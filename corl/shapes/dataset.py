"""Building the Shapes dataset (Hugging Face `datasets`) in the row schema used by CoRL stage 1.

Columns: prompt (caption), image (the render; `datasets.Image`), question, solution, question_type
("mc" / "oe"), category, scene (Scene JSON, the spec of the prompt).

Choices taken:
- Categories are balanced: each split cycles through CATEGORIES, and within each category question
  types alternate, so both are balanced to within one row; the row order is then shuffled.
- Each split has its own random stream derived from (seed, split name), so a build is deterministic
  for a seed, and changing n_test does not change the train split.
- Train is built first; a test row whose (caption, scene) also occurs in train is re-drawn (up to
  MAX_REDRAWS times). Small categories (single_object has 135 scenes) cannot always avoid overlap in
  big builds; those rows are kept, counted and logged.
- A test row may still show a train scene with another caption, and then ask the train row's question
  about it: understanding sees the image and the question only, so `train_overlap` counts those rows
  (`corl shapes build` prints them) for anyone who wants a held-out score without them.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from datasets import Dataset, DatasetDict, Features, Image, Value
from tqdm.auto import tqdm

from corl.shapes.captions import caption_for
from corl.shapes.questions import QUESTION_KINDS, make_question
from corl.shapes.render import check_size, render_scene
from corl.shapes.scene import CATEGORIES, Scene, sample_scene

logger = logging.getLogger(__name__)

MAX_REDRAWS = 50
PROGRESS_MIN_ROWS = 2000  # show a progress bar from this many rows per split

FEATURES = Features(
    {
        "prompt": Value("string"),
        "image": Image(),
        "question": Value("string"),
        "solution": Value("string"),
        "question_type": Value("string"),
        "category": Value("string"),
        "scene": Value("string"),
    }
)


def make_row(scene: Scene, rng: random.Random, question_type: str, image_size: int = 48,
             caption: str | None = None) -> dict:
    """One dataset row for `scene`: caption (drawn from `rng` unless given), render, and a question."""
    if caption is None:
        caption = caption_for(scene, rng)
    question, solution = make_question(scene, rng, question_type)
    return {
        "prompt": caption,
        "image": render_scene(scene, image_size),
        "question": question,
        "solution": solution,
        "question_type": question_type,
        "category": scene.category,
        "scene": scene.to_json(),
    }


def balanced_plan(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """n (category, question_type) pairs, balanced over both, in shuffled order."""
    k = len(CATEGORIES)
    plan = [(CATEGORIES[i % k], QUESTION_KINDS[(i // k) % len(QUESTION_KINDS)]) for i in range(n)]
    rng.shuffle(plan)
    return plan


def _build_split(
    name: str,
    n: int,
    seed: int,
    image_size: int,
    avoid: set[tuple[str, str]] | None,
) -> tuple[list[dict], int]:
    """Rows of one split, and how many of them could not avoid a (caption, scene) in `avoid`."""
    rng = random.Random(f"corl-shapes:{seed}:{name}")
    rows, overlaps = [], 0
    for category, qtype in tqdm(balanced_plan(n, rng), desc=f"shapes {name}", disable=n < PROGRESS_MIN_ROWS):
        for _ in range(MAX_REDRAWS + 1):
            scene = sample_scene(rng, category)
            caption = caption_for(scene, rng)
            if avoid is None or (caption, scene.to_json()) not in avoid:
                break
        else:
            overlaps += 1
        rows.append(make_row(scene, rng, qtype, image_size, caption=caption))
    return rows, overlaps


def _to_dataset(rows: list[dict]) -> Dataset:
    columns = {key: [r[key] for r in rows] for key in FEATURES}
    return Dataset.from_dict(columns, features=FEATURES)


def build_shapes_dataset(n_train: int, n_test: int, seed: int = 0, image_size: int = 48) -> DatasetDict:
    """A DatasetDict with `train` and `test` splits of Shapes rows (deterministic for `seed`).

    A split of 0 rows is allowed in memory, but datasets 5 cannot load an empty split back after
    save_to_disk; `corl shapes build` therefore asks for at least one row per split.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"split sizes must be >= 0, got n_train={n_train}, n_test={n_test}")
    check_size(image_size)
    train_rows, _ = _build_split("train", n_train, seed, image_size, avoid=None)
    seen = {(r["prompt"], r["scene"]) for r in train_rows}
    test_rows, overlaps = _build_split("test", n_test, seed, image_size, avoid=seen)
    if overlaps:
        logger.warning(
            "%d of %d test rows repeat a train (caption, scene) pair: the category's space is too small "
            "for this many rows", overlaps, n_test,
        )
    return DatasetDict({"train": _to_dataset(train_rows), "test": _to_dataset(test_rows)})


def scene_question_pairs(split: Dataset) -> set[tuple[str, str]]:
    """(scene JSON, question) of every row of `split`: what an understanding question shows and asks."""
    return set(zip(split["scene"], split["question"]))


def train_overlap(ds: DatasetDict) -> dict[str, int]:
    """How many test rows repeat a train scene, and how many a train (scene, question) pair, per question
    type: {"scene": n, "scene_question": n, "scene_question/mc": n, "scene_question/oe": n}."""
    train, test = ds["train"], ds["test"]
    scenes = set(train["scene"])
    pairs = scene_question_pairs(train)
    counts = {"scene": sum(s in scenes for s in test["scene"]), "scene_question": 0}
    for scene, question, qtype in zip(test["scene"], test["question"], test["question_type"]):
        if (scene, question) in pairs:
            counts["scene_question"] += 1
            counts[f"scene_question/{qtype}"] = counts.get(f"scene_question/{qtype}", 0) + 1
    return counts


def summarize(ds: Dataset) -> dict[str, dict[str, int]]:
    """Counts per category and per question type of one split."""
    return {
        "category": dict(sorted(Counter(ds["category"]).items())),
        "question_type": dict(sorted(Counter(ds["question_type"]).items())),
    }
