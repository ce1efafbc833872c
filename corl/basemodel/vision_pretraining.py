"""Pretraining of the Shapes base model's understanding encoder, before SFT: every image patch learns to
name the color and shape of the object in its grid cell.

Why: a real Janus-Pro reads images through SigLIP, an encoder pretrained before Janus ever saw a question,
so its image features already say what is in the picture and its sampled answers depend on the image.
The Shapes base started from a random encoder, and within its SFT budget the LLM learned each question's
answer prior faster than the image: sampled open-ended answers were barely better than answers to the same
questions drawn blind, so GRPO groups rarely held the contrast it needs (the README's "The Shapes base
model" has the per-template numbers before and after this step). A dense per-patch probe is the cheapest
pretraining that gives the features that property: the world's renders are flat shapes on a 3 x 3 grid, so
the labels come from the scene itself and the probe reaches ~100% per-patch accuracy within a few hundred
steps of a 2-layer, 64-wide encoder, seconds of the build.

What trains: the vision encoder (`model.model.vision_model`) and a linear probe that is thrown away after.
The aligner, the LLM and everything else keep their random initialization for SFT.

Labels: for a patch grid of P x P (48 px images, 8 px patches: 6 x 6), patch (r, c) lies in grid cell
(r * GRID // P, c * GRID // P); its color label is 0 for an empty cell, else 1 + the color's index in
COLOR_NAMES, its shape label 0 or 1 + the shape's index in SHAPES. Loss: the sum of both cross-entropies,
mean over patches.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corl.basemodel.vq_training import warmup_cosine_factor
from corl.shapes.render import render_scene
from corl.shapes.scene import COLOR_NAMES, GRID, SHAPES, Scene, sample_scene

logger = logging.getLogger(__name__)

N_COLOR_CLASSES = len(COLOR_NAMES) + 1  # + empty cell
N_SHAPE_CLASSES = len(SHAPES) + 1


@dataclass(frozen=True)
class VisionPretrainingConfig:
    """Knobs of the encoder pretraining (defaults: the shipped Shapes base model)."""

    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.01
    pool_size: int = 4000  # distinct scenes rendered once
    seed: int = 0


def cell_labels(scenes: Sequence[Scene], patches_per_side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch (color, shape) labels: two [n, P * P] long tensors in row-major patch order (module doc)."""
    colors = torch.zeros(len(scenes), GRID, GRID, dtype=torch.long)
    shapes = torch.zeros_like(colors)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            colors[i, obj.row, obj.col] = 1 + COLOR_NAMES.index(obj.color)
            shapes[i, obj.row, obj.col] = 1 + SHAPES.index(obj.shape)
    cell = torch.arange(patches_per_side) * GRID // patches_per_side  # patch index -> cell index
    return colors[:, cell][:, :, cell].flatten(1), shapes[:, cell][:, :, cell].flatten(1)


def sample_pretraining_scenes(n: int, seed: int, exclude: Iterable[str] = ()) -> list[Scene]:
    """n scenes from a seeded stream, none whose JSON is in `exclude` (the test split's scenes)."""
    excluded = set(exclude)
    rng = random.Random(f"corl-base-vision:{seed}")
    out: list[Scene] = []
    while len(out) < n:
        scene = sample_scene(rng)
        if scene.to_json() not in excluded:
            out.append(scene)
    return out


class _Probe(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, N_COLOR_CLASSES + N_SHAPE_CLASSES)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[b, N, W] patch features -> color logits [b, N, C+1], shape logits [b, N, S+1]."""
        logits = self.linear(features)
        return logits[..., :N_COLOR_CLASSES], logits[..., N_COLOR_CLASSES:]


def _encoder_pixels(image_processor, scenes: Sequence[Scene], image_size: int, chunk: int = 512) -> torch.Tensor:
    """Scenes -> renders -> [n, 3, H, W] pixel values through the model's own image processor (as SFT and RL
    feed the encoder), in chunks."""
    parts = []
    for start in range(0, len(scenes), chunk):
        images = [render_scene(s, image_size) for s in scenes[start : start + chunk]]
        parts.append(image_processor(images, return_tensors="pt").pixel_values)
    return torch.cat(parts)  # [n, 3, H, W]


@torch.no_grad()
def probe_accuracy(vision_model: torch.nn.Module, probe: _Probe, pixels: torch.Tensor, colors: torch.Tensor,
                   shapes: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Per-patch accuracy of the probe's color and shape labels, and the share of whole images whose 36
    patches are all right on both."""
    right_c, right_s, whole = [], [], []
    for start in range(0, pixels.shape[0], batch_size):
        color_logits, shape_logits = probe(vision_model(pixels[start : start + batch_size]).last_hidden_state)
        c = color_logits.argmax(-1) == colors[start : start + batch_size]  # [b, N]
        s = shape_logits.argmax(-1) == shapes[start : start + batch_size]
        right_c.append(c.float().mean(1))
        right_s.append(s.float().mean(1))
        whole.append((c & s).all(1).float())
    return {"color": round(torch.cat(right_c).mean().item(), 4), "shape": round(torch.cat(right_s).mean().item(), 4),
            "whole_image": round(torch.cat(whole).mean().item(), 4)}


def pretrain_vision_encoder(vision_model: torch.nn.Module, image_processor, config: VisionPretrainingConfig,
                            image_size: int, eval_scenes: Sequence[Scene] = (),
                            exclude: Iterable[str] = ()) -> dict:
    """Train `vision_model` in place on the per-patch probe (module docstring); returns the final loss, the
    probe's accuracy on `eval_scenes` (held-out renders, e.g. the test split's) and the time taken.
    `exclude`: scene JSONs never trained on."""
    start = time.perf_counter()
    scenes = sample_pretraining_scenes(config.pool_size, config.seed, exclude)
    patches = image_size // vision_model.config.patch_size
    pixels = _encoder_pixels(image_processor, scenes, image_size)
    colors, shapes = cell_labels(scenes, patches)
    with torch.random.fork_rng():  # the probe's init leaves the global stream as it was
        torch.manual_seed(config.seed)
        probe = _Probe(vision_model.config.hidden_size)
    params = [*vision_model.parameters(), *probe.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    vision_model.train()
    losses: list[float] = []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine_factor(step, config.warmup_steps, config.steps)
        rows = torch.randint(0, len(scenes), (config.batch_size,), generator=generator)
        color_logits, shape_logits = probe(vision_model(pixels[rows]).last_hidden_state)
        loss = (F.cross_entropy(color_logits.flatten(0, 1), colors[rows].flatten())
                + F.cross_entropy(shape_logits.flatten(0, 1), shapes[rows].flatten()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    vision_model.eval()
    tail = losses[-20:]
    report: dict = {"steps": config.steps, "final_loss": round(sum(tail) / len(tail), 4) if tail else None}
    if eval_scenes:
        eval_pixels = _encoder_pixels(image_processor, eval_scenes, image_size)
        report["probe_accuracy_test"] = probe_accuracy(vision_model, probe, eval_pixels,
                                                       *cell_labels(eval_scenes, patches))
    report["seconds"] = round(time.perf_counter() - start, 1)
    logger.info("vision pretraining: %d steps, loss %s, test probe accuracy %s", config.steps,
                report["final_loss"], report.get("probe_accuracy_test"))
    return report
