"""The experiment trackers a run reports to (`train.report_to`), driven through accelerate.

The run's Accelerator is built with `log_with=tracker_names(cfg.train.report_to)` (corl.training.setup);
`MetricsLogger` (corl.training.tracking) starts them on the main process, sends every metrics row's
numbers, and, every train.sample_steps, the samples the trainer wrote: the t2i image sheet as an image
and the mm2t answers as a table (question, solution, answer, reward). Only the main process logs.

Where things land: TensorBoard under OUT/tensorboard/<project>/, W&B in project <project> as a run named
after OUT (its files under OUT/wandb); <project> is $WANDB_PROJECT, else "corl". Any other tracker
accelerate supports (mlflow, comet_ml, aim, ...) gets the scalars, and the samples where it has a way to
take them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corl.errors import MissingPackage

logger = logging.getLogger(__name__)

# The trackers that have a corl extra; any other is installed by its own name.
EXTRAS = {"tensorboard": "'corl[tensorboard]'", "wandb": "'corl[wandb]'"}
SAMPLE_IMAGES = "samples/t2i"
SAMPLE_ANSWERS = "samples/mm2t"
ANSWER_COLUMNS = ["question", "solution", "answer", "reward"]


def tracker_names(report_to: str | Sequence[str] | None) -> list[str]:
    """train.report_to as accelerate's `log_with`: [] when off ([] or "none").

    Each name is checked here, before a model loads: accelerate raises on an unknown name but skips a
    tracker whose package is missing with only a debug message, so a run asked to report to W&B would
    otherwise train for hours reporting nowhere."""
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [name for name in names if name.lower() != "none"]
    if not names:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    unknown = sorted(set(names) - set(LOGGER_TYPE_TO_CLASS) - {"all"})
    if unknown:
        raise ValueError(f"train.report_to: unknown logger(s) {unknown}; valid: none, all, "
                         f"{', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    installed = {str(tracker) for tracker in get_available_trackers()}
    for name in names:
        # Trackers registered by another package (accelerate.tracking.register_tracker_class) are its own.
        if name in LoggerType.list() and name != "all" and name not in installed:
            raise MissingPackage(f"train.report_to has {name!r} but it is not installed: "
                              f"pip install {EXTRAS.get(name, name)}")
    return names


def project_name() -> str:
    return os.environ.get("WANDB_PROJECT", "corl")


def start_trackers(accelerator: Any, out_dir: Path, run_config: dict) -> None:
    """Start the accelerator's trackers for this run (main process; no-op without trackers)."""
    if not accelerator.log_with:
        return
    accelerator.init_trackers(
        project_name(), config=flat_config(run_config) or None,
        # resume="allow": a resumed run continues the same W&B run (W&B keys runs by name within a project)
        init_kwargs={"wandb": {"name": out_dir.name, "dir": str(out_dir), "resume": "allow"}},
    )


def flat_config(config: dict, prefix: str = "") -> dict[str, bool | int | float | str]:
    """The run config as one level of `section.key` -> bool / int / float / str, the only values every
    tracker takes as hyperparameters (TensorBoard's hparams refuses None and lists)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def log_scalars(accelerator: Any, row: dict[str, Any], step: int) -> None:
    """The numbers of a metrics row (None: a masked / NaN value, left out)."""
    values = {key: value for key, value in row.items()
              if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
    if values and accelerator.trackers:
        accelerator.log(values, step=step)


def log_samples(accelerator: Any, paths: Sequence[Path], step: int) -> None:
    """The sample files of a step (corl.training.samples.write_samples) to every tracker that takes them."""
    if not accelerator.trackers:
        return
    for path in paths:
        if path.suffix == ".png":
            _log_image(accelerator.trackers, SAMPLE_IMAGES, path, step)
        elif path.suffix == ".jsonl":
            _log_answers(accelerator.trackers, SAMPLE_ANSWERS, answer_rows(path), step)


def _log_image(trackers: Sequence[Any], name: str, path: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    for tracker in trackers:
        if tracker.name == "tensorboard":  # its log_images takes a batch array, not PIL images
            tracker.log_images({name: np.asarray(image)[None]}, step=step, dataformats="NHWC")
        elif hasattr(tracker, "log_images"):
            tracker.log_images({name: [image]}, step=step)


def answer_rows(path: Path) -> list[list[Any]]:
    """[question, solution, answer, reward] per sampled answer of an answer log (samples.write_answer_log)."""
    rows = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for answer in record["answers"]:
            rows.append([record["question"], record.get("solution"), answer["text"], answer["reward"]])
    return rows


def _log_answers(trackers: Sequence[Any], name: str, rows: list[list[Any]], step: int) -> None:
    for tracker in trackers:
        if hasattr(tracker, "log_table"):
            tracker.log_table(name, columns=ANSWER_COLUMNS, data=rows, step=step)
        elif tracker.name == "tensorboard":  # text values become TensorBoard text, which renders Markdown
            tracker.log({name: markdown_table(ANSWER_COLUMNS, rows)}, step=step)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def finish_trackers(accelerator: Any) -> None:
    """Close the trackers (flush TensorBoard, finish the W&B run). Not `accelerator.end_training()`: it also
    destroys the process group, which a pipeline running several stages in one launch still needs."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()
