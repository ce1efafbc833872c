"""Stages that chain into a pipeline (`corl demo`, `corl reproduce`): train a recipe from a given model into
its own folder, or read back the final checkpoint of a stage that already finished there."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    """A result file a pipeline wrote earlier; a damaged one (a killed run, an edit) is named, with the way
    to redo that part."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged (not JSON: {err}): delete it and run again to redo that part") from None


def finished_checkpoint(stage_dir: Path) -> Path | None:
    """The final checkpoint a finished stage in `stage_dir` recorded, when it is still there."""
    summary_path = stage_dir / "summary.json"
    if not summary_path.is_file():
        return None
    final = read_json(summary_path).get("final_checkpoint")
    if not final:
        return None
    # A moved or copied run folder: the checkpoint is found by its name inside the stage folder.
    for candidate in (stage_dir / Path(final).name, Path(final)):
        if candidate.is_dir():
            return candidate
    return None


RUN_SETTINGS = "run.json"


def check_settings(out: Path, settings: dict[str, Any], force: bool) -> bool:
    """Record what a pipeline in `out` is run with (OUT/run.json). A folder run before with other settings
    is refused, naming each difference, unless `force`; returns True when earlier results must be redone
    (force over an earlier run), False when the run starts or continues as it was."""
    path = out / RUN_SETTINGS
    before = read_json(path) if path.is_file() else None
    redo = before is not None and (force or before != settings)
    if before is not None and before != settings and not force:
        keys = sorted(set(before) | set(settings))
        listed = ", ".join(f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in keys
                           if before.get(k) != settings.get(k))
        raise ValueError(f"{out} was run with other settings ({listed}); run it with the same settings to "
                         "continue it, choose a new --out, or pass --force to redo it with these")
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return redo


def train_stage(recipe: Path, stage_dir: Path, overrides: list[str]) -> Path:
    """Train `recipe` (+ overrides) into `stage_dir` and return its final checkpoint; a finished stage is not
    run again, an interrupted one resumes from its newest checkpoint."""
    done = finished_checkpoint(stage_dir)
    if done is not None:
        logger.info("stage in %s already finished: %s", stage_dir, done)
        return done
    from corl.config import load_config
    from corl.trainer import train

    result = train(load_config(recipe, overrides), stage_dir, resume=True)
    if result.final_checkpoint is None:
        raise RuntimeError(f"the stage in {stage_dir} finished without a checkpoint")
    return Path(result.final_checkpoint)
