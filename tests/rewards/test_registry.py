"""Registry: names, duplicates, unknown names and options; RewardSet's None / NaN rule."""

from __future__ import annotations

import logging
import math

import pytest

from corl.rewards import (
    RewardSet,
    build_reward,
    get_entry,
    register_factory,
    register_function,
    reward_names,
    unregister,
)


def const(value):
    """A reward returning `value` for every row (value may be a list, one per row)."""

    def fn(prompts, completions, **columns):
        return list(value) if isinstance(value, list) else [value] * len(completions)

    return fn


def mean_of_valid(values):
    """Mean over the rows that have a value (None = masked / not applicable)."""
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid)


def test_builtin_names_are_registered():
    names = reward_names()
    for name in (
        "accuracy",
        "accuracy_mc",
        "accuracy_oe",
        "format",
        "cycle",
        "cycle_visual",
        "cycle_text",
        "tim",
        "clip_score",
    ):
        assert name in names


def test_duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_function("format", const(1.0))
    with pytest.raises(ValueError, match="already registered"):
        register_factory("cycle", lambda: const(1.0))


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as err:
        get_entry("cycel")
    assert "cycle" in str(err.value) and "accuracy" in str(err.value)


def test_unknown_option_lists_accepted_options():
    with pytest.raises(ValueError, match="partial_credit"):
        build_reward("accuracy_oe", partal_credit=True)
    with pytest.raises(ValueError, match="no options"):
        build_reward("format", strict=True)


def test_policy_required_for_tim():
    with pytest.raises(ValueError, match="needs the policy"):
        build_reward("tim")


def test_factory_runs_once_per_build():
    calls = []

    def factory(scale: float = 1.0):
        calls.append(scale)
        return const(scale)

    register_factory("_test_counting", factory)
    try:
        rewards = RewardSet.from_recipe(["_test_counting"], [2.0], {"_test_counting": {"scale": 0.5}})
        for _ in range(3):
            batch = rewards(["p", "q"], ["a", "b"])
        assert calls == [0.5]  # built once, used three times
        assert batch.total == [1.0, 1.0]  # 2.0 * 0.5
    finally:
        unregister("_test_counting")


@pytest.fixture
def fake_rewards():
    register_function("_r1", const([1.0, None, 0.5, None]))
    register_function("_r2", const([0.5, 0.25, float("nan"), None]))
    yield
    unregister("_r1")
    unregister("_r2")


def test_weighted_sum_none_and_nan_rule_mask(fake_rewards, caplog):
    rewards = RewardSet.from_recipe(["_r1", "_r2"], [1.0, 2.0])
    with caplog.at_level(logging.WARNING):
        batch = rewards(["p"] * 4, ["c"] * 4)
    # row 0: both apply -> 1.0 + 2 * 0.5; row 1: only _r2 applies -> 2 * 0.25 (no renormalization);
    # row 2: _r2 failed (NaN) -> masked; row 3: nothing applies -> None.
    assert batch.total == [2.0, 0.5, None, None]
    assert batch.values["_r2"] == [0.5, 0.25, None, None]
    assert batch.num_failed == {"_r1": 0, "_r2": 1}
    assert batch.num_none == {"_r1": 2, "_r2": 1}
    assert rewards.failure_counts["_r2"] == 1
    assert any("NaN" in rec.message and "_r2" in rec.message for rec in caplog.records)
    assert batch.num_failed["_r2"] == 1
    assert mean_of_valid(batch.values["_r1"]) == pytest.approx(0.75)
    assert sum(v is None for v in batch.total) == 2  # masked rows
    assert mean_of_valid(batch.total) == pytest.approx(1.25)
    values = [0.0 if v is None else v for v in batch.total]
    valid = [v is not None for v in batch.total]
    assert values == [2.0, 0.5, 0.0, 0.0] and valid == [True, True, False, False]


def test_weighted_sum_nan_rule_skip(fake_rewards):
    batch = RewardSet.from_recipe(["_r1", "_r2"], [1.0, 2.0], on_failure="skip")(["p"] * 4, ["c"] * 4)
    assert batch.total == [2.0, 0.5, 0.5, None]  # the failed component is left out of row 2


def test_failures_accumulate_over_calls(fake_rewards):
    rewards = RewardSet.from_recipe(["_r2"])
    rewards(["p"] * 4, ["c"] * 4)
    rewards(["p"] * 4, ["c"] * 4)
    assert rewards.failure_counts["_r2"] == 2


def test_recipe_validation():
    with pytest.raises(ValueError, match="reward_weights"):
        RewardSet.from_recipe(["format", "accuracy"], [1.0])
    with pytest.raises(ValueError, match="not in reward_funcs"):
        RewardSet.from_recipe(["format"], options={"accuracy": {}})
    with pytest.raises(ValueError, match="twice"):
        RewardSet.from_recipe(["format", "format"])


def test_wrong_length_is_a_loud_error():
    register_function("_short", lambda prompts, completions, **c: [1.0])
    try:
        with pytest.raises(ValueError, match="returned 1 values for 2"):
            RewardSet.from_recipe(["_short"])(["p", "q"], ["a", "b"])
    finally:
        unregister("_short")


def test_components_are_reported():
    def fn(prompts, completions, **columns):
        fn.last_components = {"x/half": [0.2, float("inf")]}
        return [0.1, 0.3]

    register_function("_comp", fn)
    try:
        batch = RewardSet.from_recipe(["_comp"])(["p", "q"], ["a", "b"])
        assert batch.components["x/half"] == [0.2, None]
        assert batch.num_failed["x/half"] == 1
        assert math.isclose(mean_of_valid(batch.components["x/half"]), 0.2)
    finally:
        unregister("_comp")


def test_recipe_with_text_rewards_end_to_end():
    rewards = RewardSet.from_recipe(["accuracy", "format"], [1.0, 0.5])
    completions = ["<think>red it is</think> <answer>A</answer>", "<answer>blue</answer>", "no tags"]
    question = "What color?\nA. red\nB. blue"
    batch = rewards(
        ["q"] * 3,
        completions,
        solution=["<answer>A</answer>"] * 3,
        question=[question] * 3,
        question_type=["multiple_choice"] * 3,
    )
    assert batch.values["accuracy"] == [1.0, 0.0, 0.0]
    assert batch.values["format"] == [1.0, 0.0, 0.0]
    assert batch.total == [1.5, 0.0, 0.0]
