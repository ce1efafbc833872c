import itertools
import random
from dataclasses import replace

import numpy as np
import pytest
from PIL import ImageDraw

from corl.shapes.analyzer import UNKNOWN, DetectedObject, analyze
from corl.shapes.noise_images import NOISE_KINDS, noise_image
from corl.shapes.render import render_objects, render_scene
from corl.shapes.scene import ALL_CELLS, CATEGORIES, COLOR_NAMES, SHAPES, Scene, ShapeObject, sample_scene
from corl.shapes.scorer import GenEvalResult, score_detections, score_generation, summarize_results


def test_every_clean_render_passes_its_own_scene():
    rng = random.Random(99)
    results = []
    for i in range(300):
        scene = sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        result = score_generation(render_scene(scene), scene)
        assert result.passed, (scene.to_json(), result.reason)
        assert result.category == scene.category
        results.append(result)
    assert summarize_results(results) == {**{c: 1.0 for c in CATEGORIES}, "overall": 1.0}


def _other_color(color: str) -> str:
    return next(c for c in COLOR_NAMES if c != color)


def test_wrong_color_fails():
    scene = Scene((ShapeObject("circle", "red", 1, 1),), "colors")
    image = render_scene(Scene((ShapeObject("circle", "blue", 1, 1),), "colors"))
    result = score_generation(image, scene)
    assert not result.passed and "red circle" in result.reason
    # Without named colors (single_object) the color does not matter.
    assert score_generation(image, replace(scene, category="single_object", named_colors=False)).passed


def test_color_attribution_swap_fails():
    scene = Scene((ShapeObject("circle", "red", 0, 0), ShapeObject("square", "green", 2, 2)), "color_attr")
    swapped = Scene((ShapeObject("circle", "green", 0, 0), ShapeObject("square", "red", 2, 2)), "color_attr")
    assert not score_generation(render_scene(swapped), scene).passed


def test_missing_object_fails():
    scene = Scene((ShapeObject("circle", "red", 0, 0), ShapeObject("triangle", "blue", 2, 2)), "two_object",
                  named_colors=False)
    only_circle = Scene((ShapeObject("circle", "red", 0, 0),), "single_object", named_colors=False)
    result = score_generation(render_scene(only_circle), scene)
    assert not result.passed and "triangle" in result.reason


def test_swapped_position_fails():
    rng = random.Random(4)
    for _ in range(30):
        scene = sample_scene(rng, "position")
        a, b = scene.objects
        swapped = Scene((replace(a, row=b.row, col=b.col), replace(b, row=a.row, col=a.col)), "position",
                        relation={"left of": "right of", "right of": "left of", "above": "below",
                                  "below": "above"}[scene.relation])
        result = score_generation(render_scene(swapped), scene)
        assert not result.passed and scene.relation in result.reason


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_count_fails(delta):
    rng = random.Random(8)
    for _ in range(20):
        scene = sample_scene(rng, "counting")
        n = len(scene.objects) + delta
        if not 1 <= n <= 4:
            continue
        o = scene.objects[0]
        cells = [(r, c) for r in range(3) for c in range(3)][:n]
        image = render_objects([replace(o, row=r, col=c) for r, c in cells])
        result = score_generation(image, scene)
        assert not result.passed and f"found {n}" in result.reason


def test_counting_counts_the_named_color_only():
    counted = (ShapeObject("triangle", "red", 0, 0), ShapeObject("triangle", "red", 0, 1))
    spec = Scene(counted, "counting", named_colors=True)
    image = render_objects((*counted[:1], ShapeObject("triangle", "blue", 0, 1)))
    result = score_generation(image, spec)
    assert not result.passed and "expected exactly 2 red triangle, found 1" in result.reason
    assert score_generation(image, replace(spec, named_colors=False)).passed  # two triangles, any color


@pytest.mark.parametrize("category", CATEGORIES)
def test_an_extra_object_fails_every_category(category):
    rng = random.Random(CATEGORIES.index(category))
    for _ in range(10):
        scene = sample_scene(rng, category)
        used = {(o.row, o.col) for o in scene.objects}
        free = next(cell for cell in ALL_CELLS if cell not in used)
        extra = ShapeObject(rng.choice(SHAPES), rng.choice(COLOR_NAMES), *free)
        assert score_generation(render_scene(scene), scene).passed
        result = score_generation(render_objects((*scene.objects, extra)), scene)
        assert not result.passed
        assert f"{len(scene.objects) + 1} objects where the caption asserts {len(scene.objects)}" in result.reason


def test_hedging_with_every_shape_fails():
    everything = render_objects([ShapeObject(s, "red", 1, c) for c, s in enumerate(SHAPES)])
    for a, b in itertools.combinations(SHAPES, 2):
        scene = Scene((ShapeObject(a, "red", 0, 0), ShapeObject(b, "red", 2, 2)), "two_object", named_colors=False)
        assert not score_generation(everything, scene).passed
    assert not score_generation(everything, Scene((ShapeObject("circle", "red", 1, 1),), "single_object",
                                                  named_colors=False)).passed


def test_clutter_fails_even_with_the_named_objects_present():
    scene = Scene((ShapeObject("circle", "red", 0, 0),), "colors")
    image = render_scene(scene)
    ImageDraw.Draw(image).line([(34, 34), (40, 44), (44, 35), (46, 46)], fill=(30, 160, 50), width=2)  # a scribble
    result = score_generation(image, scene)
    assert not result.passed and "1 unrecognized blob" in result.reason and "expected" not in result.reason
    # An unknown detection fails on its own, whatever the counts.
    found = [DetectedObject("circle", "red", 0, 0, (8.0, 8.0), 100), DetectedObject(UNKNOWN, "red", 2, 2, (40.0, 40.0), 30)]
    assert not score_detections(found, scene).passed
    assert score_detections(found[:1], scene).passed


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
def test_noise_fails_every_category(kind):
    rng, scene_rng = np.random.default_rng(100 + list(NOISE_KINDS).index(kind)), random.Random(1)
    for _ in range(100):
        found = analyze(noise_image(kind, rng))
        for category in CATEGORIES:
            scene = sample_scene(scene_rng, category)
            assert not score_detections(found, scene).passed, (kind, category, found)


def test_summarize_results_averages_categories():
    results = [GenEvalResult(True, "colors", ""), GenEvalResult(False, "colors", ""), GenEvalResult(True, "position", "")]
    assert summarize_results(results) == {"colors": 0.5, "position": 1.0, "overall": 0.75}
