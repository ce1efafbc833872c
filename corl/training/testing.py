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

# The modules the shapes-tiny recipes leave frozen (model.train_modules): a step must not change them.
FROZEN_PREFIXES: tuple[str, ...] = (
    "model.vision_model.", "model.aligner.", "model.vqmodel.", "model.generation_embeddings.",
    "model.generation_aligner.", "model.generation_head.",
)


def answer_length(prompts, completions, **columns) -> list[float]:
    """A test reward that varies between a random model's answers (accuracy and format score them all 0),
    so understanding groups have a spread; register it with `corl.rewards.register_function`."""
    return [len(c) / 10.0 for c in completions]


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


def recording_tracker_class():
    """An accelerate tracker class (name "recording") that keeps everything it is sent: give its instance
    to `Accelerator(log_with=[...])`, or register the class (accelerate.tracking.LOGGER_TYPE_TO_CLASS) and
    put "recording" in train.report_to; the last instance made is `cls.last`. A function, so that
    importing this module does not import accelerate."""
    from accelerate.tracking import GeneralTracker

    class RecordingTracker(GeneralTracker):
        name = "recording"
        requires_logging_directory = False
        last: RecordingTracker | None = None

        def __init__(self, run_name: str = "corl", **init_kwargs) -> None:
            super().__init__()
            self.run_name, self.init_kwargs = run_name, init_kwargs
            self.config: dict | None = None
            self.scalars: list[tuple[int | None, dict]] = []
            self.images: list[tuple[int | None, dict]] = []
            self.tables: list[tuple[int | None, str, list, list]] = []
            self.finished = False
            type(self).last = self

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values: dict) -> None:
            self.config = dict(values)

        def log(self, values: dict, step: int | None = None, **kwargs) -> None:
            self.scalars.append((step, dict(values)))

        def log_images(self, values: dict, step: int | None = None, **kwargs) -> None:
            self.images.append((step, dict(values)))

        def log_table(self, table_name: str, columns: list | None = None, data: list | None = None,
                      step: int | None = None, **kwargs) -> None:
            self.tables.append((step, table_name, list(columns or []), list(data or [])))

        def finish(self) -> None:
            self.finished = True

    return RecordingTracker
