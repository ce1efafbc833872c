import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from corl.shapes.analyzer import UNKNOWN, DetectedObject, analyze, analyze_detailed, describe
from corl.shapes.noise_images import NOISE_KINDS, noise_image
from corl.shapes.render import degrade, render_objects, render_scene
from corl.shapes.scene import CATEGORIES, Scene, ShapeObject, sample_scene


def _truth(scene: Scene) -> list[tuple]:
    return sorted((o.shape, o.color, o.row, o.col) for o in scene.objects)


def _read(image) -> list[tuple]:
    return sorted((d.shape, d.color, d.row, d.col) for d in analyze(image))


def test_recovers_every_attribute_of_600_clean_renders():
    rng = random.Random(2024)
    wrong = []
    for i in range(600):
        scene = sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        found = analyze(render_scene(scene, 48))
        assert len(found) == len(scene.objects)  # count
        if _truth(scene) != sorted((d.shape, d.color, d.row, d.col) for d in found):
            wrong.append(scene.to_json())
    assert wrong == []


@pytest.mark.parametrize("size", [32, 64])
def test_recovers_clean_renders_at_other_sizes(size):
    rng = random.Random(size)
    for _ in range(120):
        scene = sample_scene(rng)
        assert _read(render_scene(scene, size)) == _truth(scene)


def test_robust_to_mild_blur_and_noise():
    rng, noise_rng = random.Random(5), np.random.default_rng(5)
    right = 0
    for _ in range(150):
        scene = sample_scene(rng)
        right += _read(degrade(render_scene(scene), 0.8, 0.04, noise_rng)) == _truth(scene)
    assert right / 150 >= 0.99


def test_robust_to_strong_blur_and_noise():
    rng, noise_rng = random.Random(6), np.random.default_rng(6)
    right = sum(_read(degrade(render_scene(scene), 1.5, 0.10, noise_rng)) == _truth(scene)
                for scene in (sample_scene(rng) for _ in range(150)))
    assert right / 150 >= 0.99


def _recognized(found: list[DetectedObject]) -> list[DetectedObject]:
    return [d for d in found if d.shape != UNKNOWN and d.color != UNKNOWN]


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
def test_noise_holds_no_recognized_object(kind):
    rng = np.random.default_rng(list(NOISE_KINDS).index(kind))
    for size, n in ((48, 100), (32, 10), (64, 10)):
        for _ in range(n):
            assert _recognized(analyze(noise_image(kind, rng, size))) == []


def test_random_weight_janus_decoder_output_holds_no_object():
    """The flaw this guards against: an untrained Janus model's images read as nine objects."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.janus.modeling_janus import JanusVQVAE

    torch.manual_seed(0)
    # The Shapes base model's VQ layout (patch 8 -> 4 levels, 6 x 6 codes for 48 px), random weights.
    config = transformers.JanusVQVAEConfig(embed_dim=8, num_embeddings=128, latent_channels=32, base_channels=32,
                                           channel_multiplier=[1, 1, 1, 1], num_res_blocks=0, num_patches=6)
    with torch.no_grad():
        pixels = JanusVQVAE(config).eval().decode(torch.randint(0, 128, (60, 36)))  # (60, 3, 48, 48) in ~[-1, 1]
    images = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert images.shape == (60, 48, 48, 3)
    for image in images:
        assert _recognized(analyze(image)) == []


def test_scribble_next_to_objects_is_unknown_and_objects_survive():
    scene = Scene((ShapeObject("circle", "red", 0, 0), ShapeObject("square", "blue", 0, 2)), "color_attr")
    image = render_scene(scene)
    ImageDraw.Draw(image).line([(34, 34), (40, 44), (44, 35), (46, 46)], fill=(30, 160, 50), width=2)
    found = analyze(image)
    assert sorted((d.shape, d.color, d.row, d.col) for d in _recognized(found)) == _truth(scene)
    assert [(d.shape, d.row, d.col) for d in found if d not in _recognized(found)] == [(UNKNOWN, 2, 2)]


def test_object_in_noise_or_on_a_colored_canvas_is_not_recognized():
    obj = ShapeObject("square", "red", 1, 1)
    noisy = np.asarray(render_objects([obj]), dtype=np.uint8).copy()
    rng = np.random.default_rng(0)
    noisy[14:34, 31:40] = rng.integers(0, 256, (20, 9, 3))  # noise touching the square's right side
    assert _recognized(analyze(noisy)) == []
    canvas = np.asarray(render_objects([obj]), dtype=np.uint8).copy()
    canvas[(canvas == 255).all(axis=-1)] = (190, 190, 200)  # a grey-blue background instead of white
    ((det, evidence),) = analyze_detailed(canvas)
    assert (det.shape, det.color) == (UNKNOWN, UNKNOWN) and evidence.reasons == ("no white background",)
    # The same square on white is recognized, with clean evidence.
    ((det, evidence),) = analyze_detailed(render_objects([obj]))
    assert (det.shape, det.color) == ("square", "red") and evidence.reasons == ()
    assert evidence.background_ink < 0.01 and evidence.unexplained == 0.0


def test_shapes_joined_by_full_strength_ink_are_unknown():
    image = render_objects([ShapeObject("square", "red", 1, 0), ShapeObject("square", "red", 1, 1)])
    ImageDraw.Draw(image).rectangle([12, 21, 20, 26], fill=(220, 30, 30))  # a thick red bar across the gap
    found = analyze_detailed(image)
    assert len(found) == 2
    for det, evidence in found:
        assert (det.shape, det.color) == (UNKNOWN, UNKNOWN) and "joined to ink in the next cell" in evidence.reasons
        assert evidence.bridge > 0.9


def test_oversized_and_undersized_shapes_are_unknown():
    big = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(big).rectangle([1, 1, 15, 15], fill=(220, 30, 30))  # 15 px: nearly a whole cell
    small = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(small).ellipse([20, 20, 26, 26], fill=(30, 70, 220))  # 7 px circle
    for image in (big, small):
        ((det, evidence),) = analyze_detailed(image)
        assert det.shape == UNKNOWN and "implausible size" in evidence.reasons


def test_accepts_arrays_and_reports_geometry():
    scene = Scene((ShapeObject("square", "green", 0, 2),), "colors")
    img = render_scene(scene, 48)
    from_array = analyze(np.asarray(img))
    from_float = analyze(np.asarray(img, dtype=np.float64) / 255.0)
    assert from_array == analyze(img) == from_float
    (det,) = from_array
    assert det.center_xy == pytest.approx((40.0, 8.0), abs=0.5)
    assert 110 < det.area < 150  # an 11.5 px square


def test_empty_and_non_palette_images():
    assert analyze(Image.new("RGB", (48, 48), "white")) == []
    grey = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(grey).rectangle([18, 18, 29, 29], fill=(90, 90, 90))
    (det,) = analyze(grey)
    assert det.color == UNKNOWN and det.shape == "square"
    bar = Image.new("RGB", (48, 48), "white")
    ImageDraw.Draw(bar).rectangle([18, 22, 29, 24], fill=(220, 30, 30))  # 12 x 3: no shape of ours
    (det,) = analyze(bar)
    assert det.shape == UNKNOWN and det.color == "red"
    with pytest.raises(ValueError):
        analyze(np.zeros((48, 48)))


def _det(shape, color, row, col):
    return DetectedObject(shape, color, row, col, ((col + 0.5) * 16, (row + 0.5) * 16), 100)


def test_describe_phrases_like_captions():
    assert describe([]) == "an empty image"
    assert describe([_det("circle", "red", 1, 1)]) == "a red circle"
    assert describe([_det("circle", "red", 1, 0), _det("square", "blue", 1, 2)]) == \
        "a red circle to the left of a blue square"
    assert describe([_det("square", "blue", 2, 1), _det("circle", "red", 0, 1)]) == "a red circle above a blue square"
    assert describe([_det("circle", "red", 0, 0), _det("square", "blue", 1, 1)]) == "a red circle and a blue square"
    tri = [_det("triangle", "green", 0, c) for c in range(3)]
    assert describe(tri[:2]) == "two green triangles"
    assert describe(tri + [_det("circle", "red", 2, 2)]) == "three green triangles and a red circle"
    assert describe([_det(UNKNOWN, "red", 0, 0)]) == "a red shape"


def test_describe_of_counting_renders_names_the_count():
    rng = random.Random(3)
    for _ in range(20):
        scene = sample_scene(rng, "counting")
        o = scene.objects[0]
        words = {2: "two", 3: "three", 4: "four"}
        assert describe(analyze(render_scene(scene))) == f"{words[len(scene.objects)]} {o.color} {o.shape}s"
