"""R_TIM: hand-computed cosine alignments with padded masks; the policy-driven reward."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from corl.rewards import RewardSet, build_reward, text_image_matching, tim_raw, tim_score

S = 1 / math.sqrt(2)


@dataclass
class MatchingStates:
    """Stand-in with the fields of corl.policy.matching.MatchingStates (rewards only read these four)."""

    image_states: torch.Tensor
    image_mask: torch.Tensor
    text_states: torch.Tensor
    text_mask: torch.Tensor


def states_for(image_rows, image_valid, text_rows, text_valid):
    return MatchingStates(
        torch.tensor(image_rows, dtype=torch.float32),
        torch.tensor(image_valid),
        torch.tensor(text_rows, dtype=torch.float32),
        torch.tensor(text_valid),
    )


def example_states() -> MatchingStates:
    """Three rows, D = 2, padded to Li = 3 image and Lt = 3 text positions."""
    return states_for(
        image_rows=[
            [[1, 0], [0, 1], [5, 5]],  # row 0: i1, i2, padding (would match t2 perfectly if counted)
            [[0, 0], [1, 0], [9, 9]],  # row 1: padding FIRST, then i1
            [[1, 0], [0, 1], [0, 0]],  # row 2: no valid text -> undefined
        ],
        image_valid=[[True, True, False], [False, True, False], [True, True, False]],
        text_rows=[
            [[1, 0], [1, 1], [-1, 0]],  # row 0: t1, t2, padding
            [[1, 0], [-1, 0], [0, 1]],  # row 1: t1, t2, t3
            [[1, 0], [0, 1], [1, 1]],
        ],
        text_valid=[[True, True, False], [True, True, True], [False, False, False]],
    )


def test_tim_hand_computed():
    raw = tim_raw(example_states())
    # row 0: image->text: i1 best 1 (t1), i2 best 1/sqrt2 (t2) -> (1 + S) / 2
    #        text->image: t1 best 1 (i1), t2 best S (i1 or i2) -> (1 + S) / 2
    assert raw[0].item() == pytest.approx((1 + S) / 2, abs=1e-6)
    # row 1: image->text: i1 best 1; text->image: t1 1, t2 -1, t3 0 -> 0; R = (1 + 0) / 2
    assert raw[1].item() == pytest.approx(0.5, abs=1e-6)
    assert math.isnan(raw[2].item())
    score = tim_score(example_states())
    assert score[0].item() == pytest.approx(((1 + S) / 2 + 1) / 2, abs=1e-6)
    assert score[1].item() == pytest.approx(0.75, abs=1e-6)


def test_tim_bounds_scale_invariance_and_zero_vectors():
    same = states_for([[[2, 0]]], [[True]], [[[0.5, 0]]], [[True]])
    opposite = states_for([[[1, 1]]], [[True]], [[[-3, -3]]], [[True]])
    zero = states_for([[[0, 0]]], [[True]], [[[1, 0]]], [[True]])
    assert tim_score(same).item() == pytest.approx(1.0)
    assert tim_score(opposite).item() == pytest.approx(0.0)
    assert tim_score(zero).item() == pytest.approx(0.5)  # cosine 0 with a zero vector


def test_tim_accepts_a_mapping_and_checks_shapes():
    s = example_states()
    as_dict = {
        "image_states": s.image_states,
        "image_mask": s.image_mask,
        "text_states": s.text_states,
        "text_mask": s.text_mask,
    }
    assert torch.allclose(tim_raw(as_dict)[:2], tim_raw(s)[:2])
    with pytest.raises(ValueError, match="disagree"):
        tim_raw(MatchingStates(s.image_states, s.image_mask[:, :2], s.text_states, s.text_mask))


class FakeMatching:
    """Stands in for corl.policy.matching.matching_states where the tim reward looks it up: fixed states,
    every call recorded as (policy, images, texts, grad enabled)."""

    def __init__(self, states):
        self.states, self.calls = states, []

    def __call__(self, policy, images, texts):
        self.calls.append((policy, list(images), list(texts), torch.is_grad_enabled()))
        return self.states


@pytest.fixture
def fake_matching(monkeypatch):
    """fake_matching(states) -> a FakeMatching installed as corl.rewards.text_image_matching.matching_states."""

    def install(states) -> FakeMatching:
        fake = FakeMatching(states)
        monkeypatch.setattr(text_image_matching, "matching_states", fake)
        return fake

    return install


def test_tim_reward_calls_the_policy_without_grad_and_masks_undefined_rows(tiny_policy, fake_matching):
    fake = fake_matching(example_states())
    reward = build_reward("tim", policy=tiny_policy)
    values = reward(["p0", "p1", "p2"], ["img0", "img1", "img2"])
    assert fake.calls == [(tiny_policy, ["img0", "img1", "img2"], ["p0", "p1", "p2"], False)]
    assert values[1] == pytest.approx(0.75) and math.isnan(values[2])
    batch = RewardSet.from_recipe(["tim"], policy=tiny_policy)(["p0", "p1", "p2"], ["a", "b", "c"])
    assert batch.values["tim"][2] is None and batch.num_failed["tim"] == 1 and batch.total[2] is None


def test_tim_reward_text_column(tiny_policy, fake_matching):
    fake = fake_matching(example_states())
    reward = build_reward("tim", policy=tiny_policy, text_column="caption")
    reward(["templated"] * 3, ["a", "b", "c"], caption=["c0", "c1", "c2"])
    assert fake.calls[-1][2] == ["c0", "c1", "c2"]
    with pytest.raises(KeyError, match="caption"):
        reward(["t"] * 3, ["a", "b", "c"])


def test_tim_rejects_a_policy_that_is_not_a_janus_policy():
    with pytest.raises(ValueError, match="JanusPolicy"):
        build_reward("tim", policy=object())


def test_the_policy_record_type_is_accepted():
    records = pytest.importorskip("corl.policy.matching")
    s = example_states()
    theirs = records.MatchingStates(s.image_states, s.image_mask, s.text_states, s.text_mask)
    assert torch.allclose(tim_raw(theirs)[:2], tim_raw(s)[:2])


def test_raw_scale_is_the_cosine_score_itself(tiny_policy, fake_matching):
    """scale="raw" (paper, official code): R in [-1, 1]; "unit" is (R + 1) / 2 of the same rows."""
    fake_matching(example_states())
    unit = build_reward("tim", policy=tiny_policy)(["p0", "p1", "p2"], ["a", "b", "c"])
    raw = build_reward("tim", policy=tiny_policy, scale="raw")(["p0", "p1", "p2"], ["a", "b", "c"])
    assert raw[1] == pytest.approx(0.5) and unit[1] == pytest.approx((raw[1] + 1) / 2)
    assert math.isnan(raw[2])
    with pytest.raises(ValueError, match="scale must be one of unit, raw"):
        build_reward("tim", policy=tiny_policy, scale="minmax")
