"""accuracy_upstream: the official code's accuracy on hand-computed cases (the official recipe family)."""

from __future__ import annotations

import pytest

from corl.rewards import build_reward
from corl.rewards.accuracy_upstream import soft_jaccard, upstream_score


@pytest.mark.parametrize("completion, solution, expected", [
    ("<think>x</think><answer>Two.</answer>", "<answer>2</answer>", 1.0),  # number word, trailing "."
    ("<think>x</think><answer>Red</answer>", "<answer>red</answer>", 1.0),
    ("red", "<answer>red</answer>", 1.0),  # no tag needed
    ("<think>so</think> Answer: blue", "<answer>blue</answer>", 1.0),  # tags and "Answer:" removed
    ("<answer>red circl</answer>", "<answer>red circle</answer>", (1 + 10 / 11) / (4 - (1 + 10 / 11))),
    ("<answer>green</answer>", "<answer>red</answer>", 0.0),
    ("<answer>A or B</answer>", "<answer>B</answer>", 1 / 3),  # hedges earn partial credit upstream
    ("<answer>B</answer>", "<answer>B</answer>", 1.0),
])
def test_hand_computed(completion, solution, expected):
    assert upstream_score(completion, solution) == pytest.approx(expected)


def test_soft_jaccard_is_order_independent_and_bounded():
    assert soft_jaccard("the red circle", "circle red the") == 1.0
    assert soft_jaccard("", "") == 0.0
    assert soft_jaccard("reed", "red") == pytest.approx((2 * 3 / 7) / (2 - 2 * 3 / 7))  # difflib ratio 6/7


def test_registered_reward_reads_the_solution_column():
    reward = build_reward("accuracy_upstream")
    assert reward(["q", "q"], ["<answer>two</answer>", "x"], solution=["2", None]) == [1.0, None]
    with pytest.raises(KeyError, match="solution"):
        reward(["q"], ["a"])
