"""corl.eval.grading: answers scored like the training rewards; atomic JSON; image grids."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from corl.eval.grading import batch_seed, batched, image_grid, score_answer, write_json_atomic

MC_QUESTION = "What color is the circle?\nA. red\nB. blue\nC. green"


@pytest.mark.parametrize(
    ("completion", "correct", "formatted"),
    [
        ("<think>it is blue</think><answer>B</answer>", 1.0, True),
        ("<think>it is blue</think> <answer>blue</answer>", 1.0, True),  # option text maps to the letter
        ("<think>x</think><answer>(B)</answer>", 1.0, True),
        ("<answer>B</answer>", 1.0, False),  # right, but not in the think/answer format
        ("<think>x</think><answer>A</answer>", 0.0, True),
        ("B", 0.0, False),  # no <answer> tag: wrong, as R_acc scores it
    ],
)
def test_mc_scoring(completion, correct, formatted):
    score = score_answer(completion, "<answer>B</answer>", MC_QUESTION, "mc")
    assert (score.question_format, score.correct, score.formatted) == ("mc", correct, formatted)


@pytest.mark.parametrize(
    ("answer", "solution", "correct"),
    [
        ("two", "<answer>2</answer>", 1.0),
        ("The Red", "red", 1.0),
        ("three", "two", 0.0),
        ("3.43", ["24/7", "3.43"], 1.0),  # a list of acceptable answers
    ],
)
def test_oe_scoring(answer, solution, correct):
    score = score_answer(f"<think>.</think><answer>{answer}</answer>", solution, "How many?", "oe")
    assert (score.question_format, score.extracted, score.correct) == ("oe", answer, correct)


def test_format_inferred_from_options_when_type_missing():
    assert score_answer("<answer>B</answer>", "B", MC_QUESTION).question_format == "mc"
    assert score_answer("<answer>B</answer>", "blue", "What color?").question_format == "oe"


def test_unscorable_mc_row_is_none():
    assert score_answer("<answer>B</answer>", "<answer>purple</answer>", MC_QUESTION, "mc").correct is None


def test_batching_and_seeds():
    assert [(s, list(b)) for s, b in batched([1, 2, 3, 4, 5], 2)] == [(0, [1, 2]), (2, [3, 4]), (4, [5])]
    with pytest.raises(ValueError):
        list(batched([1], 0))
    seeds = {batch_seed(s, start) for s in range(3) for start in range(0, 40, 8)}
    assert len(seeds) == 15


def test_write_json_atomic(tmp_path):
    path = write_json_atomic({"a": 1.5, "p": tmp_path}, tmp_path / "sub" / "r.json")
    assert json.loads(path.read_text()) == {"a": 1.5, "p": str(tmp_path)}
    with pytest.raises(TypeError):
        write_json_atomic({"x": object()}, path)
    assert json.loads(path.read_text())["a"] == 1.5  # a failed write leaves the old file
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left behind


def test_image_grid_row_major():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    grid = image_grid([Image.new("RGB", (4, 3), c) for c in colors], cols=2)
    assert grid.size == (8, 6)
    assert [grid.getpixel(xy) for xy in [(0, 0), (4, 0), (0, 3), (4, 3)]] == colors
    with pytest.raises(ValueError, match="share one size"):
        image_grid([Image.new("RGB", (4, 3)), Image.new("RGB", (3, 3))], cols=2)
