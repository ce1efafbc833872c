from __future__ import annotations

import random

import torch
from transformers import JanusImageProcessorPil, JanusVisionConfig
from transformers.models.janus.modeling_janus import JanusVisionModel

from corl.basemodel.vision_pretraining import (
    VisionPretrainingConfig,
    cell_labels,
    pretrain_vision_encoder,
    sample_pretraining_scenes,
)
from corl.shapes.scene import COLOR_NAMES, SHAPES, Scene, ShapeObject, sample_scene


def test_cell_labels_give_every_patch_its_cells_object():
    scene = Scene(objects=(ShapeObject("circle", "red", 0, 0), ShapeObject("square", "blue", 2, 1)),
                  named_colors=True, category="color_attr")
    colors, shapes = cell_labels([scene], patches_per_side=6)
    colors, shapes = colors.view(6, 6), shapes.view(6, 6)
    red, blue = 1 + COLOR_NAMES.index("red"), 1 + COLOR_NAMES.index("blue")
    assert (colors[:2, :2] == red).all() and (shapes[:2, :2] == 1 + SHAPES.index("circle")).all()
    assert (colors[4:, 2:4] == blue).all() and (shapes[4:, 2:4] == 1 + SHAPES.index("square")).all()
    assert int((colors > 0).sum()) == 8 and int((shapes > 0).sum()) == 8  # 2 objects x 2 x 2 patches


def test_pretraining_scenes_are_seeded_and_skip_excluded_scenes():
    first = sample_pretraining_scenes(30, seed=3)
    assert [s.to_json() for s in first] == [s.to_json() for s in sample_pretraining_scenes(30, seed=3)]
    excluded = {first[0].to_json(), first[5].to_json()}
    again = sample_pretraining_scenes(30, seed=3, exclude=excluded)
    assert len(again) == 30 and not excluded & {s.to_json() for s in again}


def test_pretraining_teaches_the_encoder_what_each_cell_holds():
    torch.manual_seed(0)
    vision = JanusVisionModel(JanusVisionConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                image_size=48, patch_size=8, mlp_ratio=2.0))
    processor = JanusImageProcessorPil(size={"height": 48, "width": 48}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    rng = random.Random(1)
    held_out = [sample_scene(rng) for _ in range(64)]
    untrained = pretrain_vision_encoder(vision, processor, VisionPretrainingConfig(steps=0, pool_size=8), 48,
                                        eval_scenes=held_out)["probe_accuracy_test"]
    state = torch.random.get_rng_state()
    report = pretrain_vision_encoder(vision, processor, VisionPretrainingConfig(steps=80, pool_size=400), 48,
                                     eval_scenes=held_out, exclude=[s.to_json() for s in held_out])
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    # Most patches are empty (about 80%): the trained probe must make far fewer errors than "empty" everywhere.
    majority_error = float((cell_labels(held_out, 6)[0] > 0).float().mean())
    accuracy = report["probe_accuracy_test"]
    assert 1 - untrained["color"] > majority_error - 0.05
    assert 1 - accuracy["color"] < majority_error / 3 and 1 - accuracy["shape"] < majority_error / 3
    assert report["steps"] == 80 and report["final_loss"] < 1.0
