"""Captioners: tiny random BLIP through the hub loader, the policy captioning itself, the Shapes analyzer."""

from __future__ import annotations

import sys
import types

import pytest

from corl.rewards.captioners import BlipCaptioner, PolicyCaptioner, ShapesCaptioner, load_blip, make_captioner


def test_tiny_blip_loads_through_the_hub_loader_and_captions(tiny_blip_dir, solid, shapes_image):
    model, processor = load_blip(str(tiny_blip_dir))
    assert type(model).__name__ == "BlipForConditionalGeneration"
    assert load_blip(str(tiny_blip_dir)) == (model, processor)  # cached: loaded once
    captioner = make_captioner("blip", model=str(tiny_blip_dir), max_new_tokens=4, batch_size=2)
    images = [solid((255, 0, 0), (40, 50)), shapes_image(1, 64), solid((0, 0, 0), (8, 8))]  # mixed sizes
    captions = captioner(images)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    # Greedy decoding is deterministic, and batching does not change a caption.
    assert captioner(images) == captions
    assert [captioner([img])[0] for img in images] == captions


def test_blip_prompt_is_stripped_from_captions(tiny_blip_dir, solid):
    captioner = BlipCaptioner(model=str(tiny_blip_dir), max_new_tokens=3, prompt="a picture of")
    caption = captioner([solid((0, 0, 255))])[0]
    assert not caption.lower().startswith("a picture of")


def test_self_captioner_asks_the_policy(solid, tiny_policy, fake_answer):
    fake = fake_answer(
        [
            "<think>I see red.</think><answer>a red square</answer>",
            "a blue circle",
            "<think>hmm</think> two dots",
        ]
    )
    captioner = make_captioner("self", policy=tiny_policy, instruction="Caption it.")
    captions = captioner([solid((255, 0, 0)), solid((0, 0, 255)), solid((0, 0, 0))])
    assert captions == ["a red square", "a blue circle", "two dots"]
    assert fake.calls == [(tiny_policy, 3, ["Caption it."] * 3, True)]


def test_self_captioner_needs_a_policy(solid, tiny_policy, fake_answer):
    with pytest.raises(ValueError, match="JanusPolicy"):
        make_captioner("self")
    with pytest.raises(ValueError, match="JanusPolicy"):
        make_captioner("self", policy=object())
    fake_answer(["x"])
    with pytest.raises(ValueError, match="returned 1 answers"):
        PolicyCaptioner(tiny_policy)([solid((0, 0, 0)), solid((9, 9, 9))])


def test_shapes_captioner_uses_analyze_then_describe(monkeypatch, solid):
    seen = []
    fake = types.ModuleType("corl.shapes")
    fake.analyze = lambda img: seen.append(img.size) or ["obj"] * (img.size[0] // 16)
    fake.describe = lambda objects: f"{len(objects)} objects"
    monkeypatch.setitem(sys.modules, "corl.shapes", fake)
    captioner = ShapesCaptioner()
    assert captioner([solid((0, 0, 0), (32, 32)), solid((0, 0, 0), (48, 48))]) == ["2 objects", "3 objects"]
    assert seen == [(32, 32), (48, 48)]


def test_shapes_captioner_with_the_real_analyzer():
    pytest.importorskip("corl.shapes.analyzer")
    import random

    from corl.shapes.render import render_scene
    from corl.shapes.scene import sample_scene

    scene = sample_scene(random.Random(0))
    caption = ShapesCaptioner()([render_scene(scene)])[0]
    assert isinstance(caption, str) and caption


def test_unknown_captioner_and_stray_options():
    with pytest.raises(ValueError, match="blip, self, shapes"):
        make_captioner("git")
    with pytest.raises(ValueError, match="no options"):
        make_captioner("shapes", model="x")
