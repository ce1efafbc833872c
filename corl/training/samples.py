"""What the policy produced at a step, for people: a PNG sheet of generated images with their prompts and
rewards (t2i), and the sampled answers with their rewards as JSONL (mm2t), under OUT/samples/.

Sheet layout: one row per prompt (at most `max_prompts`), the real image first when the row has one,
then the G generated images, each titled with its total reward (and "masked" for a missing reward).
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

from corl.tasks import MM2T, T2I
from corl.training.batches import MicroBatch

logger = logging.getLogger(__name__)


def _reward_label(value: float) -> str:
    return "masked" if math.isnan(value) else f"R={value:.2f}"


def write_image_sheet(micro_batch: MicroBatch, path: Path, step: int, max_prompts: int = 4,
                      max_images: int = 8) -> Path:
    """The t2i rollouts of one micro-batch as a PNG grid (module docstring)."""
    batch = micro_batch.tasks[T2I]
    group = batch.rollout.group_size
    prompts = min(max_prompts, batch.num_rows // group)
    images = min(max_images, group)
    real = micro_batch.rows.get("image")
    cols = images + (1 if real else 0)
    fig, axes = plt.subplots(prompts, cols, figsize=(1.6 * cols, 2.0 * prompts), squeeze=False)
    rewards = batch.rewards.tolist()
    for p in range(prompts):
        caption = batch.rollout.captions[p * group]
        first = 0
        if real:
            axes[p, 0].imshow(real[p].convert("RGB"), interpolation="nearest")
            axes[p, 0].set_title("real", fontsize=7)
            first = 1
        for j in range(images):
            r = p * group + j
            axes[p, first + j].imshow(batch.rollout.images[r].convert("RGB"), interpolation="nearest")
            axes[p, first + j].set_title(_reward_label(rewards[r]), fontsize=7)
        axes[p, 0].set_ylabel("\n".join(textwrap.wrap(caption, 24)), fontsize=6, rotation=0, ha="right",
                              va="center", labelpad=4)
        for ax in axes[p]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"step {step}: generated images (G={group}) with total t2i rewards", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_answer_log(micro_batch: MicroBatch, path: Path, step: int, max_prompts: int = 4) -> Path:
    """The mm2t rollouts of one micro-batch as JSONL: question, solution, and each answer with its rewards."""
    batch = micro_batch.tasks[MM2T]
    group = batch.rollout.group_size
    values = batch.reward_batch.values
    lines = []
    for p in range(min(max_prompts, batch.num_rows // group)):
        rows = range(p * group, (p + 1) * group)
        lines.append({
            "step": step,
            "question": batch.rollout.questions[p * group],
            "solution": micro_batch.rows.get("solution", [None] * (p + 1))[p],
            "answers": [
                {"text": batch.rollout.texts[r], "reward": None if math.isnan(batch.rewards[r]) else float(batch.rewards[r]),
                 **{name: vals[r] for name, vals in values.items()}}
                for r in rows
            ],
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# What each task's samples look like on disk: a PNG sheet of images, a JSONL log of answers.
SAMPLE_WRITERS = {T2I: (write_image_sheet, ".png"), MM2T: (write_answer_log, ".jsonl")}


def write_samples(micro_batch: MicroBatch, out_dir: Path, step: int) -> list[Path]:
    """Everything of one micro-batch worth looking at, as OUT/samples/step-{step:06d}.{png,jsonl}."""
    stem = out_dir / "samples" / f"step-{step:06d}"
    written = [write(micro_batch, stem.with_suffix(suffix), step)
               for task, (write, suffix) in SAMPLE_WRITERS.items() if task in micro_batch.tasks]
    logger.info("samples of step %d: %s", step, ", ".join(str(p) for p in written))
    return written
