import random
import re

import pytest

from corl.shapes.captions import PREFIXES, caption_for, think_text
from corl.shapes.scene import CATEGORIES, COLORS, SHAPES, Scene, ShapeObject, number_word, sample_scene

VOCAB = set(" ".join(PREFIXES).split()) | set(COLORS) | set(SHAPES) | {s + "s" for s in SHAPES} | {
    "a", "an", "and", "to", "the", "left", "right", "of", "on", "above", "below", "two", "three", "four"}


@pytest.mark.parametrize("category", CATEGORIES)
def test_captions_state_exactly_the_scene(category):
    rng = random.Random(11)
    for _ in range(120):
        scene = sample_scene(rng, category)
        cap = caption_for(scene, rng)
        words = cap.split()
        assert cap == cap.strip() and "  " not in cap and cap == cap.lower()
        assert set(words) <= VOCAB, cap
        assert not re.search(r"\d", cap)  # numbers are words
        named = {w for w in words if w in COLORS}
        if scene.named_colors:
            assert named == {o.color for o in scene.objects}, cap
        else:
            assert not named, cap
        for o in scene.objects:
            assert o.shape in cap
        if category == "counting":
            assert words[0] == number_word(len(scene.objects)) or number_word(len(scene.objects)) in words
            assert scene.objects[0].shape + "s" in words
        if category == "position":
            first, second = scene.objects
            a_pos = cap.index(first.color + " " + first.shape)
            b_pos = cap.rindex(second.color + " " + second.shape)
            assert a_pos < b_pos  # subject before reference
            rel_word = {"left of": "left", "right of": "right", "above": "above", "below": "below"}[scene.relation]
            assert rel_word in words


def test_caption_wording_varies_and_is_seeded():
    scene = sample_scene(random.Random(0), "position")
    caps = {caption_for(scene, random.Random(i)) for i in range(40)}
    assert len(caps) > 3
    assert caption_for(scene, random.Random(5)) == caption_for(scene, random.Random(5))


def test_think_text_groups_and_counts_objects_in_reading_order():
    assert think_text(Scene((ShapeObject("circle", "red", 0, 0), ShapeObject("circle", "red", 0, 2)), "counting",
                            named_colors=True)) == "I see two red circles."
    scene = Scene((ShapeObject("square", "blue", 2, 2), ShapeObject("triangle", "green", 0, 1)), "color_attr")
    assert think_text(scene) == "I see a green triangle and a blue square."
