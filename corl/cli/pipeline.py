"""Stages that chain into a pipeline (`corl demo`, `corl reproduce`): train a recipe from a given model into
its own folder, or read back the final checkpoint of a stage that already finished there."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


RUN_SETTINGS = "run.json"


def check_settings(out: Path, settings: dict[str, Any], force: bool) -> bool:
    """Record what a pipeline in `out` is run with (OUT/run.json). A folder run before with other settings
    is refused, naming each difference, unless `force`; returns True when earlier results must be redone
    (force over an earlier run), False when the run starts or continues as it was."""
    from corl.report.demo import read_json  # a damaged file is named (the report reads results the same way)

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
    run again, an interrupted one resumes from its newest checkpoint (found by name in a moved folder)."""
    from corl.report.demo import final_checkpoint

    done = final_checkpoint(stage_dir)
    if done is not None:
        logger.info("stage in %s already finished: %s", stage_dir, done)
        return done
    from corl.config import load_config
    from corl.trainer import train

    result = train(load_config(recipe, overrides), stage_dir, resume=True)
    if result.final_checkpoint is None:
        raise RuntimeError(f"the stage in {stage_dir} finished without a checkpoint")
    return Path(result.final_checkpoint)
