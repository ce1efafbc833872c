"""Tiny, fast training setups for tests and examples: a random tiny Janus saved to disk and shipped
shapes-tiny recipes shrunk to seconds per step (G=2, B=2, short answers, a 16-row Shapes world).

Set $CORL_CACHE to a temporary folder first so the Shapes rows are built there, not in ~/.cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from corl.config import CorlConfig, load_config, resolve_recipe

# Overrides that make any shapes-tiny recipe run in seconds on a CPU.
TINY_OVERRIDES: tuple[str, ...] = (
    "model.dtype=fp32",
    "train.precision=fp32",
    "data.source=shapes",
    "data.shapes_n_train=16",
    "data.shapes_n_test=4",
    "data.shapes_image_size=32",
    "rollout.num_generations=2",
    "rollout.max_completion_length=6",
    "train.per_device_batch_size=2",
    "train.max_steps=1",
    "train.sample_steps=0",
    "rewards.text_similarity=overlap",  # no BERTScore encoder to load
    "optim.learning_rate=1e-3",
)


def save_tiny_policy(directory: str | Path, seed: int = 0) -> Path:
    """A random tiny Janus (corl.policy.testing.tiny_janus) saved with save_pretrained; returns the path."""
    from corl.policy import JanusPolicy, save_policy
    from corl.policy.testing import tiny_janus

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        model, processor = tiny_janus(seed)
        save_policy(JanusPolicy(model, processor), directory)
    return directory


def tiny_config(model_dir: str | Path, stage: str = "unified", overrides: Sequence[str] = ()) -> CorlConfig:
    """The shipped shapes-tiny recipe of `stage`, pointed at `model_dir` and shrunk by TINY_OVERRIDES."""
    return load_config(
        resolve_recipe(f"shapes-tiny/{stage}"),
        [f"model.name_or_path={model_dir}", *TINY_OVERRIDES, *overrides],
    )
