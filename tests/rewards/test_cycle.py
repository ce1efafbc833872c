"""R_cycle: combining the halves, components for logging, real backends, registry building."""

from __future__ import annotations

import math
from statistics import mean

import pytest

from corl.rewards import RewardSet, build_reward
from corl.rewards.captioners import load_blip
from corl.rewards.cycle import CycleReward, combine_halves, make_cycle_reward
from corl.rewards.text_similarity import TokenOverlapSimilarity


def test_combine_halves_hand_computed():
    assert combine_halves(0.4, 0.8) == pytest.approx(0.6)
    assert combine_halves(None, 0.8) == 0.8  # no real image: the textual half alone
    assert combine_halves(0.3, None) == 0.3
    assert combine_halves(None, None) is None
    assert math.isnan(combine_halves(float("nan"), 0.8))  # a failed half fails the row


def stub_cycle(visual_scores, captions):
    """CycleReward with fixed visual scores and captions, token-F1 text similarity."""
    return CycleReward(
        visual=lambda reals, gens: list(visual_scores),
        captioner=lambda images: list(captions),
        text_similarity=TokenOverlapSimilarity(),
    )


def test_cycle_is_the_mean_of_its_halves_with_components():
    reward = stub_cycle([1.0, 0.5, None], ["a red circle", "a blue square", "two triangles"])
    prompts = ["a red circle", "a red circle", "two green triangles"]
    # text halves (token F1): 1.0; 0.0; {2, triangles} vs {2, green, triangles} -> P=1, R=2/3, F1=0.8
    values = reward(prompts, ["img"] * 3, image=["real"] * 3)
    assert values == [pytest.approx(1.0), pytest.approx(0.25), pytest.approx(0.8)]
    assert reward.last_components["cycle/visual"] == [1.0, 0.5, None]
    assert reward.last_components["cycle/text"] == [pytest.approx(1.0), 0.0, pytest.approx(0.8)]
    assert reward.last_captions == ["a red circle", "a blue square", "two triangles"]


def test_reward_set_logs_the_halves():
    reward = stub_cycle([0.2, 0.4], ["a red circle", "x"])
    batch = RewardSet([("cycle", reward, 1.0)])(
        ["a red circle", "a red circle"], ["g1", "g2"], image=["r", "r"]
    )
    assert batch.components["cycle/visual"] == [pytest.approx(0.2), pytest.approx(0.4)]
    assert mean(batch.components["cycle/visual"]) == pytest.approx(0.3)
    assert mean(batch.components["cycle/text"]) == pytest.approx(0.5)
    assert mean(batch.values["cycle"]) == pytest.approx((0.6 + 0.2) / 2)


def test_real_offline_backends_prefer_the_matching_image():
    pytest.importorskip("corl.shapes.analyzer")
    import random

    from corl.shapes.captions import caption_for
    from corl.shapes.render import render_scene
    from corl.shapes.scene import sample_scene

    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(2)]
    images = [render_scene(s) for s in scenes]
    prompts = [caption_for(s, rng) for s in scenes]
    reward = make_cycle_reward(visual="ssim", captioner="shapes", text_similarity="overlap")
    matched = reward(prompts, images, image=images)
    swapped = reward(prompts, images[::-1], image=images)
    assert all(m > s for m, s in zip(matched, swapped)), (prompts, matched, swapped)


def test_single_halves_from_the_registry(shapes_image):
    visual = build_reward("cycle_visual", visual="mse")
    img = shapes_image(1)
    assert visual(["p"], [img], image=[img]) == [pytest.approx(1.0)]
    assert not visual.last_components  # a single half has no sub-components
    text = build_reward("cycle_text", captioner="shapes", text_similarity="overlap")
    assert 0.0 <= text(["a red circle"], [img])[0] <= 1.0  # no image column needed


def test_self_captioner_through_the_registry(shapes_image, tiny_policy, fake_answer):
    fake = fake_answer(reply=lambda questions: ["<answer>a red circle</answer>"] * len(questions))
    reward = build_reward(
        "cycle",
        policy=tiny_policy,
        captioner="self",
        text_similarity="overlap",
        captioner_options={"instruction": "What is drawn?"},
    )
    img = shapes_image(2)
    assert reward(["a red circle"], [img], image=[img]) == [pytest.approx(1.0, abs=1e-4)]
    assert fake.calls == [(tiny_policy, 1, ["What is drawn?"], True)]
    with pytest.raises(ValueError, match="JanusPolicy"):
        build_reward("cycle", captioner="self")


def test_blip_backend_is_loaded_once(tiny_blip_dir, shapes_image):
    reward = build_reward(
        "cycle",
        captioner="blip",
        text_similarity="overlap",
        captioner_options={"model": str(tiny_blip_dir), "max_new_tokens": 3},
    )
    misses = load_blip.cache_info().misses
    img = shapes_image(3)
    for _ in range(3):
        values = reward(["a red circle"] * 2, [img, img], image=[img, img])
    assert load_blip.cache_info().misses == misses
    assert all(0.0 <= v <= 1.0 for v in values)


def test_reference_column_and_missing_columns(shapes_image):
    reward = make_cycle_reward(captioner="shapes", text_similarity="overlap", reference_column="caption")
    img = shapes_image(4)
    with pytest.raises(KeyError, match="caption"):
        reward(["<|User|> templated prompt"], [img], image=[img])
    with pytest.raises(KeyError, match="image"):
        make_cycle_reward(text_similarity="overlap")(["p"], [img])
    value = reward(["<|User|> templated"], [img], image=[img], caption=["x"])
    assert 0.0 <= value[0] <= 1.0


def test_bad_halves():
    with pytest.raises(ValueError, match="halves"):
        CycleReward(halves=("audio",))
    with pytest.raises(ValueError, match="captioner"):
        CycleReward(halves=("text",))


def test_sum_of_halves_is_the_papers_eq_3():
    """combine="sum": R_cycle = visual + text (paper Eq. 3, the official code's F1 + 1 - LPIPS), in [0, 2]."""
    assert combine_halves(0.4, 0.8, "sum") == pytest.approx(1.2)
    assert combine_halves(None, 0.8, "sum") == 0.8
    reward = CycleReward(visual=lambda reals, gens: [1.0, 0.5], captioner=lambda images: ["a red circle", "x"],
                         text_similarity=TokenOverlapSimilarity(), combine="sum")
    assert reward(["a red circle", "a red circle"], ["img"] * 2, image=["real"] * 2) == [pytest.approx(2.0), 0.5]
    built = build_reward("cycle", visual="mse", captioner="shapes", text_similarity="overlap", combine="sum")
    assert built.combine == "sum"
    with pytest.raises(ValueError, match="combine must be one of mean, sum"):
        CycleReward(visual=lambda r, g: [], captioner=lambda i: [], text_similarity=TokenOverlapSimilarity(),
                    combine="max")
