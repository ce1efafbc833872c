"""`corl demo`: CoRL end to end in the Shapes world on a CPU, with nothing to download.

    base (shipped Shapes model) --eval--> unified RL --eval--> refined t2i -> refined MC -> refined OE --eval-->
    report.md

Each stage is a plain `corl train` run of the shipped `shapes-tiny/<stage>` recipe that starts from the
previous stage's final checkpoint (the paper's order: unified, then task-refined stages; here the refined
stages run one after another so that a single final model carries all of them). Evaluations use the
held-out split of the default Shapes dataset (`corl shapes build`'s defaults), the same code as
`corl eval --suite shapes`.

Re-running the same command resumes: finished stages and evaluations are read back from their files,
an interrupted stage continues from its newest checkpoint. The seconds each part took are kept in
DIR/timings.json and summed over the runs of the command, so a resumed demo reports the time its parts
really cost, not the near-zero time of reading them back.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corl.config import DEFAULT_CFG_WEIGHT
from corl.cli.argtypes import positive_int
from corl.cli.pipeline import read_json

logger = logging.getLogger(__name__)

DEMO_STAGES: tuple[str, ...] = ("unified", "t2i", "mc", "oe")
RECIPE_FAMILY = "shapes-tiny"


@dataclass
class DemoSettings:
    out: Path
    seed: int = 0
    eval_rows: int = 300  # held-out rows per evaluation: the whole default test split (150 MC + 150 OE questions)
    images_per_prompt: int = 2
    stages: tuple[str, ...] = DEMO_STAGES
    overrides: list[str] = field(default_factory=list)  # key=value applied to every stage


def evaluate_checkpoint(model_path: str | Path, out_json: Path, settings: DemoSettings) -> dict[str, Any]:
    """The Shapes suite on `settings.eval_rows` held-out rows, cached in `out_json` (re-runs read it back)."""
    if out_json.is_file():
        return read_json(out_json)
    from corl.data import load_rows
    from corl.data.shapes_source import default_shapes_dir
    from corl.eval.grading import write_json_atomic
    from corl.eval.shapes_suite import evaluate_shapes
    from corl.policy import load_policy

    rows = load_rows(str(default_shapes_dir()), split="test", task="unified", limit=settings.eval_rows).dataset
    policy = load_policy(str(model_path), dtype="fp32", device="cpu")
    result = evaluate_shapes(policy, rows, images_per_prompt=settings.images_per_prompt,
                             cfg_weight=DEFAULT_CFG_WEIGHT, seed=settings.seed, model_path=str(model_path))
    write_json_atomic(result, out_json)
    return result


def run_stage(stage: str, model_path: str | Path, settings: DemoSettings, stage_dir: Path | None = None,
              extra_overrides: tuple[str, ...] = ()) -> Path:
    """Train one stage (shapes-tiny recipe) from `model_path` into `stage_dir` (default OUT/stage); a
    finished stage is not run again, an interrupted one resumes."""
    from corl.cli.pipeline import train_stage
    from corl.config import resolve_recipe

    overrides = [f"model.name_or_path={model_path}", f"seed={settings.seed}", *settings.overrides, *extra_overrides]
    return train_stage(resolve_recipe(f"{RECIPE_FAMILY}/{stage}"), stage_dir or settings.out / stage, overrides)


def run_pipeline(settings: DemoSettings) -> dict[str, Any]:
    """Evaluate the base, run the stages, evaluate after unified and at the end; return everything."""
    from corl.policy import default_model_path

    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    timings = read_timings(out)
    timings["runs"] = timings.get("runs", 0) + 1
    base = default_model_path()

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        value = fn(*args)
        add_seconds(out, timings, name, time.perf_counter() - start)
        return value

    evals = {"base": timed("eval_base", evaluate_checkpoint, base, out / "eval_base.json", settings)}
    model = base
    checkpoints = {"base": str(base)}
    for stage in settings.stages:
        model = timed(f"train_{stage}", run_stage, stage, model, settings)
        checkpoints[stage] = str(model)
        if stage == "unified" and len(settings.stages) > 1:
            evals["unified"] = timed("eval_unified", evaluate_checkpoint, model, out / "eval_unified.json", settings)
    evals["final"] = timed("eval_final", evaluate_checkpoint, model, out / "eval_final.json", settings)
    rewards = {}
    for stage in settings.stages:
        summary = out / stage / "summary.json"
        if summary.is_file():
            rewards[stage] = read_json(summary)["reward"]
    return {"evals": evals, "checkpoints": checkpoints, "rewards": rewards, "timings": timings}


TIMINGS_FILE = "timings.json"


def read_timings(out: Path) -> dict[str, float]:
    """Seconds per part of earlier runs of the demo in `out` (empty for a new one), plus "runs"."""
    path = out / TIMINGS_FILE
    return read_json(path) if path.is_file() else {}


def add_seconds(out: Path, timings: dict[str, float], name: str, seconds: float) -> None:
    """timings[name] += seconds, written through to DIR/timings.json at once (a killed run keeps them)."""
    from corl.eval.grading import write_json_atomic

    timings[name] = round(timings.get(name, 0.0) + seconds, 1)
    write_json_atomic(timings, out / TIMINGS_FILE)


def run_demo(args: argparse.Namespace) -> int:
    from corl.report import write_demo_report

    settings = DemoSettings(out=args.out, seed=args.seed, eval_rows=args.eval_rows,
                            images_per_prompt=args.images_per_prompt, stages=tuple(args.stages),
                            overrides=list(args.overrides))
    start = time.perf_counter()
    result = run_pipeline(settings)
    add_seconds(settings.out, result["timings"], "total", time.perf_counter() - start)
    report = write_demo_report(settings.out, result)
    print()
    print(report.summary_text)
    print(f"report: {report.path}  (total {result['timings']['total']:.0f} s)")
    return 0


def parse_stages(text: str) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in stages if s not in DEMO_STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {unknown}; choose from {', '.join(DEMO_STAGES)}")
    return stages


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run CoRL end to end in the Shapes world on CPU (no downloads)",
                       description="Evaluate the Shapes base model, run the unified stage and the refined "
                                   "t2i / MC / OE stages (shapes-tiny recipes), evaluate again and write "
                                   "DIR/report.md. Re-running the command resumes.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage and evaluation (default 0)")
    p.add_argument("--eval-rows", type=positive_int, default=DemoSettings.eval_rows,
                   help=f"held-out rows per evaluation (default {DemoSettings.eval_rows})")
    p.add_argument("--images-per-prompt", type=positive_int, default=DemoSettings.images_per_prompt,
                   help=f"generated images per held-out caption (default {DemoSettings.images_per_prompt})")
    p.add_argument("--stages", type=parse_stages, default=DEMO_STAGES,
                   help="comma-separated stages to run, in order (default: unified,t2i,mc,oe)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every stage, e.g. train.max_steps=5")
    p.set_defaults(func=run_demo, _parser=p)
