"""Evaluation during training (train.eval_steps): the Shapes suite on the held-out split.

Runs on the main process only (the other ranks wait at a barrier), with the unwrapped policy: greedy
answers and CFG images, exactly what `corl eval --suite shapes` measures, on train.eval_max_rows rows
balanced over GenEval category and question type (the same rows at every evaluation; the first rows of
the split would leave some categories with one row and make the curve jump). Only the Shapes world has a built-in verifier; for other data sources evaluate checkpoints with
`corl eval`. Skipped (with a warning) under train.sharding=fsdp2, whose sharded parameters would need every
rank to take part.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

EVAL_STRATA = ("category", "question_type")  # the Shapes test split's columns the subset is balanced over


class ShapesEvaluator:
    """Scores the policy on the Shapes test split; `__call__` returns eval/* metrics (main process)."""

    def __init__(self, cfg: Any, accelerator: Any, out_dir: Path) -> None:
        self.cfg, self.accelerator, self.out_dir = cfg, accelerator, out_dir
        self.enabled = cfg.train.eval_steps > 0
        self.rows = None
        if not self.enabled:
            return
        if cfg.data.source != "shapes":
            logger.warning("train.eval_steps: only the Shapes world is evaluated in training; use `corl eval`")
            self.enabled = False
        elif cfg.train.sharding != "none":
            logger.warning("train.eval_steps is skipped under train.sharding=fsdp2; use `corl eval` on checkpoints")
            self.enabled = False

    def due(self, step: int) -> bool:
        return self.enabled and step % self.cfg.train.eval_steps == 0

    def _test_rows(self) -> Any:
        if self.rows is None:
            from corl.data import load_rows
            from corl.data.collate import balanced_indices, strata_of
            from corl.data.shapes_source import shapes_dir_of

            rows = load_rows(str(shapes_dir_of(self.cfg.data)), split="test", task="unified").dataset
            n = self.cfg.train.eval_max_rows
            if n and n < len(rows):
                rows = rows.select(balanced_indices(strata_of(rows, EVAL_STRATA), n))
            self.rows = rows
        return self.rows

    def __call__(self, policy: Any, step: int) -> dict[str, float]:
        from corl.eval.shapes_suite import evaluate_shapes

        metrics: dict[str, float] = {}
        if self.accelerator.is_main_process:
            result = evaluate_shapes(
                policy, self._test_rows(), images_per_prompt=2, cfg_weight=self.cfg.rollout.cfg_weight,
                seed=self.cfg.seed, max_new_tokens=self.cfg.rollout.max_completion_length,
            )
            metrics = {f"eval/{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))}
            path = self.out_dir / "eval" / f"step-{step:06d}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2))
            logger.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items()})
        self.accelerator.wait_for_everyone()
        return metrics
