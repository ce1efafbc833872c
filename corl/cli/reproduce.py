"""`corl reproduce FAMILY --out DIR`: the paper's whole pipeline from one recipe family, resumable.

    unified  ->  refined t2i  \\
             ->  refined MC    > each from the unified checkpoint
             ->  refined OE   /
    MC + OE  ->  merged (Gaussian merging relative to the unified checkpoint: one understanding model)
    evaluation bridges: GenEval / DPG / WISE image dumps from the t2i model, MC / OE benchmarks from the
    merged model (each given by its flag)
    DIR/report.md: the stages' rewards, the checkpoints, the evaluation results and the settings

FAMILY is a folder of stage recipes (`janus-pro-1b/paper`, `janus-pro-1b/official`, their 7B
counterparts, or your own folder with unified.yaml, t2i.yaml, mc.yaml, oe.yaml). key=value overrides
apply to every stage. Re-running the same command continues: finished stages, the merge and finished
evaluations are read back, an interrupted stage resumes from its newest checkpoint. One process runs the
whole pipeline; for several GPUs, run the stages with `accelerate launch ... corl train` (README,
"Reproduce the paper").
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from corl.cli.argtypes import add_threads_argument, positive_int

logger = logging.getLogger(__name__)

REFINED_STAGES = ("t2i", "mc", "oe")
IMAGE_SUITES = ("geneval", "dpg", "wise")


def family_recipes(family: str) -> dict[str, Path]:
    """stage -> recipe file of a family folder (shipped name or path); every stage must be there."""
    from corl.config import recipes_dir

    folder = Path(family) if Path(family).is_dir() else recipes_dir() / family
    if not folder.is_dir():
        raise FileNotFoundError(f"no recipe family '{family}': give a folder of stage recipes such as "
                                f"janus-pro-1b/paper")
    recipes = {stage: folder / f"{stage}.yaml" for stage in ("unified", *REFINED_STAGES)}
    missing = [str(p) for p in recipes.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the family {folder} lacks {', '.join(missing)}")
    return recipes


def run_evaluation(out_json: Path, argv: list[str]) -> dict[str, Any]:
    """One `corl eval` run (its own parser and code path), read back when its results exist already."""
    from corl.report.demo import read_json

    if out_json.is_file():
        return read_json(out_json)
    from corl.cli import build_parser
    from corl.cli.eval import run_eval

    args = build_parser().parse_args(["eval", *argv, "--out", str(out_json)])
    return run_eval(args)


def reward_rows(stage_dir: Path) -> dict[str, Any]:
    from corl.report.demo import read_json

    summary = stage_dir / "summary.json"
    return read_json(summary).get("reward", {}) if summary.is_file() else {}


def run_reproduce(args: argparse.Namespace) -> int:
    from corl.cli.pipeline import train_stage
    from corl.merge import merge_checkpoints

    from corl.cli.pipeline import check_settings

    recipes = family_recipes(args.family)
    out: Path = args.out
    settings = {"family": args.family, "overrides": list(args.overrides), "geneval": args.geneval,
                "dpg": args.dpg, "wise": args.wise, "benchmark": list(args.benchmark), "max_rows": args.max_rows}
    if check_settings(out, settings, args.force):  # --force over an earlier run: redo every part
        for part in (*("unified", *REFINED_STAGES), "merged-mc-oe", "eval", "plots"):
            shutil.rmtree(out / part, ignore_errors=True)
    seconds: dict[str, float] = {}

    def timed(name: str, fn, *fn_args, **fn_kwargs):
        start = time.perf_counter()
        value = fn(*fn_args, **fn_kwargs)
        seconds[name] = round(time.perf_counter() - start, 1)
        return value

    checkpoints = {"unified": timed("unified", train_stage, recipes["unified"], out / "unified", args.overrides)}
    for stage in REFINED_STAGES:
        overrides = [f"model.name_or_path={checkpoints['unified']}", *args.overrides]
        checkpoints[stage] = timed(stage, train_stage, recipes[stage], out / stage, overrides)
    merged = out / "merged-mc-oe"
    if not (merged / "config.json").is_file():
        timed("merge", merge_checkpoints, checkpoints["mc"], checkpoints["oe"], merged,
              method="gaussian", base=checkpoints["unified"])
    checkpoints["merged"] = merged

    evals: dict[str, Any] = {}
    limit = ["--max-rows", str(args.max_rows)] if args.max_rows else []
    for suite in IMAGE_SUITES:
        data = getattr(args, suite)
        if data:
            evals[suite] = timed(f"eval_{suite}", run_evaluation, out / "eval" / f"{suite}.json", [
                "--suite", suite, "--model", str(checkpoints["t2i"]), "--data", data,
                "--image-dir", str(out / "eval" / f"{suite}-images"), *limit])
    for benchmark in args.benchmark:
        name = Path(benchmark).stem
        evals[name] = timed(f"eval_{name}", run_evaluation, out / "eval" / f"{name}.json", [
            "--suite", "benchmark", "--recipe", benchmark, "--model", str(merged), *limit])

    report = write_report(out, args, checkpoints, evals, seconds)
    print(f"report: {report}")
    return 0


def write_report(out: Path, args: argparse.Namespace, checkpoints: dict[str, Path], evals: dict[str, Any],
                 seconds: dict[str, float]) -> Path:
    """OUT/report.md and OUT/report.html (corl.report.write_pipeline_report: rewards, metric plots per stage,
    evaluations with counts and intervals, provenance, relative checkpoints) and report.json."""
    from corl.eval.grading import write_json_atomic
    from corl.report import write_pipeline_report

    stages = ("unified", *REFINED_STAGES)
    report = write_pipeline_report(out, f"CoRL pipeline: {args.family}", stages, evals, overrides=args.overrides,
                                   extra_checkpoints={"merged": checkpoints["merged"]} if "merged" in checkpoints
                                   else None, seconds=seconds)
    write_json_atomic({"family": args.family, "overrides": args.overrides,
                       "rewards": {stage: reward_rows(out / stage) for stage in stages},
                       "checkpoints": {k: str(Path(v).relative_to(out)) if Path(v).is_relative_to(out) else str(v)
                                       for k, v in checkpoints.items()},
                       "evals": evals, "seconds": seconds}, out / "report.json")
    return report.path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce", help="the paper's whole pipeline from a recipe family: stages, merge, evaluation, report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("family", help="folder of stage recipes, e.g. janus-pro-1b/paper or janus-pro-1b/official")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every stage")
    p.add_argument("--out", type=Path, required=True, help="output directory (one folder per stage)")
    p.add_argument("--geneval", default=None, metavar="FILE", help="GenEval evaluation_metadata.jsonl")
    p.add_argument("--dpg", default=None, metavar="DIR", help="DPG-Bench prompt folder")
    p.add_argument("--wise", default=None, metavar="PATH", help="WISE prompt json file or folder")
    p.add_argument("--benchmark", action="append", default=[], metavar="NAME",
                   help="MC / OE benchmark of the merged model: mmstar, mmmu, pope or a benchmark YAML (repeatable)")
    p.add_argument("--max-rows", type=positive_int, default=None, help="at most this many prompts / questions per "
                   "evaluation (default: all)")
    p.add_argument("--force", action="store_true", help="redo a folder run before with other settings (its "
                   "stages, merge and evaluations are deleted first)")
    add_threads_argument(p)
    from corl.cli.train import _IntermixedParser

    p.__class__ = _IntermixedParser
    p.set_defaults(func=run_reproduce, _parser=p)
