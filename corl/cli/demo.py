"""`corl demo`: CoRL end to end in the Shapes world on a CPU, with nothing to download.

    base (shipped Shapes model) --eval--> unified RL --eval--> refined t2i -> refined MC -> refined OE --eval-->
    report.md + report.html

Each stage is a plain `corl train` run of the shipped `shapes-tiny/<stage>` recipe that starts from the
previous stage's final checkpoint (the paper's order: unified, then task-refined stages; here the refined
stages run one after another so that a single final model carries all of them). Evaluations use the
held-out split of the default Shapes dataset (`corl shapes build`'s defaults), the same code as
`corl eval --suite shapes --details`; each evaluation also keeps failure examples and generates a fixed
grid of held-out captions with a fixed seed. During training the trainer evaluates a few held-out rows
at regular steps (`train.eval_steps`), the report's held-out curve.

Seeds. `--seeds 0` (the default) runs into OUT itself; several seeds run one after another, each into
OUT/seed-N, and OUT/report.md gives mean +/- std over them (each seed folder has its own full report).

Re-runs. OUT/run.json records the settings a run was made with. Running the same command again continues
(finished stages and evaluations are read back, an interrupted stage resumes from its newest
checkpoint); running it with other settings is refused with the differences listed, unless `--force`,
which deletes what the earlier run wrote and starts over. Paths inside the folder are relative (found
by name), so a run folder can be moved or copied and still continues. The report is rewritten after every
stage and evaluation, so a killed run has a report of what finished. Seconds per part are kept in
timings.json and summed over the invocations.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corl.cli.argtypes import add_threads_argument, nonnegative_int, positive_int
from corl.config import DEFAULT_CFG_WEIGHT

logger = logging.getLogger(__name__)

DEMO_STAGES: tuple[str, ...] = ("unified", "t2i", "mc", "oe")
RECIPE_FAMILY = "shapes-tiny"
CURVE_ROWS = 48  # held-out rows of each in-training evaluation (4 per category and question type)
CURVE_POINTS = 5  # in-training evaluations per stage


@dataclass
class DemoSettings:
    out: Path  # the folder of one seed's run
    seed: int = 0
    max_rows: int = 300  # held-out rows per evaluation: the whole default test split (150 MC + 150 OE questions)
    images_per_prompt: int = 4
    stages: tuple[str, ...] = DEMO_STAGES
    overrides: list[str] = field(default_factory=list)  # key=value applied to every stage
    curve_rows: int = CURVE_ROWS  # 0: no in-training evaluation
    curve_points: int = CURVE_POINTS
    pictures: bool = True  # failure examples and the prompt grid of each evaluation
    # answers sampled per question at temperature 1 in each evaluation (the report's per-template table of
    # sampled vs blind accuracy: what GRPO can elicit); 0: greedy answers only
    answer_samples: int = 8


def run_record(settings: DemoSettings, seeds: list[int]) -> dict[str, Any]:
    """What OUT/run.json records and a re-run must match."""
    return {"seeds": list(seeds), "max_rows": settings.max_rows, "images_per_prompt": settings.images_per_prompt,
            "stages": list(settings.stages), "overrides": list(settings.overrides),
            "curve_rows": settings.curve_rows, "curve_points": settings.curve_points,
            "answer_samples": settings.answer_samples}


def check_rerun(out: Path, command: str, record: dict[str, Any], force: bool, written: tuple[str, ...]) -> bool:
    """The re-run rule (corl.cli.pipeline.check_settings, shared with `corl reproduce`): a folder run before
    with other settings is refused with the differences listed; `force` first deletes what an earlier run
    wrote (`written`: names or globs in OUT), so the run starts over. Records the settings in OUT/run.json;
    returns True when an earlier run of the same settings is continued."""
    from corl.cli.pipeline import RUN_SETTINGS, check_settings

    if force:
        removed = _clear(out, written)
        if removed:
            logger.info("--force: removed %s from %s", ", ".join(removed), out)
    continued = (out / RUN_SETTINGS).is_file()
    check_settings(out, {"command": command, **record}, force=False)
    return continued


def _clear(out: Path, written: tuple[str, ...]) -> list[str]:
    removed = []
    for pattern in written:
        for path in sorted(out.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path.name)
    return removed


def record_provenance(out: Path, seeds: list[int]) -> None:
    """Append this invocation (command, commit, versions, machine) to OUT/provenance.json."""
    from corl.eval.grading import write_json_atomic
    from corl.report.demo import PROVENANCE_FILE, read_json
    from corl.report.provenance import collect

    path = out / PROVENANCE_FILE
    records = read_json(path) if path.is_file() else []
    write_json_atomic([*records, collect(seeds=seeds)], path)


# ----------------------------------------------------------------------------------------- stages


def stage_overrides(stage: str, model_path: str | Path, settings: DemoSettings,
                    extra: tuple[str, ...] = ()) -> list[str]:
    """The overrides of one stage: its starting model and seed, the in-training held-out evaluation
    (CURVE_POINTS times a stage, unless the user set train.eval_steps), then the user's."""
    from corl.config import load_config, resolve_recipe

    first = [f"model.name_or_path={model_path}", f"seed={settings.seed}"]
    user = [*settings.overrides, *extra]
    if settings.curve_rows and not any(o.startswith("train.eval_steps=") for o in user):
        steps = load_config(resolve_recipe(f"{RECIPE_FAMILY}/{stage}"), first + user).train.max_steps
        first += [f"train.eval_steps={max(1, math.ceil(steps / settings.curve_points))}",
                  f"train.eval_max_rows={settings.curve_rows}"]
    return first + user


def _same_place(old: Any, new: Any) -> bool:
    """Two model paths that name the same checkpoint of a moved or copied run folder (or of a moved
    install): their last two components agree."""
    return isinstance(old, str) and isinstance(new, str) and Path(old).parts[-2:] == Path(new).parts[-2:]


def stage_changes(stage_dir: Path, cfg: Any) -> tuple[dict[str, tuple[Any, Any]], bool]:
    """(settings that differ between the stage already in `stage_dir` and `cfg`, whether its starting
    model only moved with the folder)."""
    import yaml

    from corl.config import to_dict
    from corl.trainer import config_changes

    saved_path = stage_dir / "config.yaml"
    if not saved_path.is_file():
        return {}, False
    try:
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise ValueError(f"{saved_path} is damaged (not a YAML mapping): pass --force to redo the run, or "
                         "choose another --out")
    changes = config_changes(saved, to_dict(cfg))
    moved = "model.name_or_path" in changes and _same_place(*changes["model.name_or_path"])
    if moved:
        del changes["model.name_or_path"]
    return changes, moved


def run_stage(stage: str, model_path: str | Path, settings: DemoSettings, stage_dir: Path | None = None,
              extra_overrides: tuple[str, ...] = ()) -> Path:
    """Train one stage (shapes-tiny recipe) from `model_path` into `stage_dir` (default OUT/stage) and
    return its final checkpoint. A finished stage is read back, an interrupted one resumes; a stage made
    with other settings is refused, naming them."""
    from corl.config import load_config, resolve_recipe
    from corl.report.demo import final_checkpoint
    from corl.trainer import train

    stage_dir = stage_dir or settings.out / stage
    done = final_checkpoint(stage_dir)
    cfg = load_config(resolve_recipe(f"{RECIPE_FAMILY}/{stage}"),
                      stage_overrides(stage, model_path, settings, extra_overrides))
    changes, moved = stage_changes(stage_dir, cfg)
    if changes:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise ValueError(f"{stage_dir} holds a {stage} stage made with other settings ({listed}): pass --force "
                         "to redo the run, or choose another --out")
    if done is not None:
        logger.info("stage %s already finished: %s", stage, done)
        return done
    # A moved folder's interrupted stage recorded its starting model at the old place: the same model.
    result = train(cfg, stage_dir, resume=True, allow_config_change=moved)
    if result.final_checkpoint is None:
        raise RuntimeError(f"the stage in {stage_dir} finished without a checkpoint")
    return stage_dir / Path(result.final_checkpoint).name


# ------------------------------------------------------------------------------------ evaluations


def _relative_name(model_path: str | Path, folder: Path) -> str:
    """How an evaluation records its model: relative to the run folder when inside it."""
    path = Path(model_path)
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(model_path)


def _check_eval_settings(result: dict[str, Any], out_json: Path, settings: DemoSettings) -> None:
    """An evaluation read back must have been made with the asked-for rows, images and seed."""
    made = {"answer_samples": 0, **(result.get("settings") or {})}  # evaluations without the key sampled none
    wanted = {"max_rows": settings.max_rows, "images_per_prompt": settings.images_per_prompt, "seed": settings.seed,
              "answer_samples": settings.answer_samples}
    diff = [f"{k}: {made.get(k)!r} -> {v!r}" for k, v in wanted.items() if made.get(k) != v]
    if diff:
        raise ValueError(f"{out_json} was made with other settings ({'; '.join(diff)}): pass --force to redo "
                         "the run, or choose another --out")


def held_out_rows(settings: DemoSettings) -> Any:
    from corl.data import load_rows
    from corl.data.shapes_source import default_shapes_dir

    return load_rows(str(default_shapes_dir()), split="test", task="unified", limit=settings.max_rows).dataset


def training_pairs(settings: DemoSettings) -> set[tuple[str, str]] | None:
    """The (scene JSON, question) pairs of every train split the demo's stages read (whole splits: a
    superset of what they sample), or None when a stage reads data whose scenes cannot be read back (not
    a local Shapes dataset, or renamed columns)."""
    from corl.config import load_config, resolve_recipe
    from corl.data.shapes_source import resolve_source

    splits = set()
    for stage in settings.stages:
        data = load_config(resolve_recipe(f"{RECIPE_FAMILY}/{stage}"), [f"seed={settings.seed}", *settings.overrides]).data
        if data.column_map:
            return None
        splits.add((resolve_source(data), data.split))  # the stages mostly share one split: read it once
    pairs: set[tuple[str, str]] = set()
    for source, split in splits:
        found = _split_pairs(source, split)
        if found is None:
            return None
        pairs |= found
    return pairs


@functools.lru_cache(maxsize=4)
def _split_pairs(source: str, split: str) -> frozenset[tuple[str, str]] | None:
    """(scene, question) pairs of a save_to_disk dataset's split, read once per process (a demo evaluates
    several checkpoints against the same training data); None without those columns."""
    from datasets import load_from_disk

    from corl.shapes.dataset import scene_question_pairs

    try:
        rows = load_from_disk(source)[split]
    except (OSError, KeyError, ValueError):  # not a save_to_disk folder, or no such split
        return None
    if not {"scene", "question"} <= set(rows.column_names):
        return None
    return frozenset(scene_question_pairs(rows.select_columns(["scene", "question"])))


def evaluate_checkpoint(model_path: str | Path, out_json: Path, settings: DemoSettings,
                        name: str | None = None) -> dict[str, Any]:
    """The Shapes suite on `settings.max_rows` held-out rows, cached in `out_json` (read back when made
    with the same settings). With `name` (and settings.pictures), also the failure examples and the
    prompt grid of this model in settings.out, and for the base the first point of the held-out curve."""
    import tempfile

    from corl.eval.grading import write_json_atomic
    from corl.eval.shapes_suite import evaluate_shapes, unseen_accuracy
    from corl.report import demo as layout
    from corl.report.examples import GRID_FILE, generate_grid, grid_prompts, save_failures

    folder = settings.out
    pictures = settings.pictures and name is not None
    todo_grid = pictures and not (layout.grid_folder(folder, name) / GRID_FILE).is_file()
    todo_curve = name == "base" and settings.curve_rows and not (folder / layout.CURVE_BASE_FILE).is_file()
    result = None
    if out_json.is_file():
        result = layout.read_json(out_json)
        _check_eval_settings(result, out_json, settings)
    if result is not None and not todo_grid and not todo_curve:
        return result

    from corl.policy import load_policy

    rows = held_out_rows(settings)
    policy = load_policy(str(model_path), dtype="fp32", device="cpu")
    folder.mkdir(parents=True, exist_ok=True)
    if result is None:
        # The images of every caption go to a scratch folder; only the failure examples are kept.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".eval-images-") as images:
            result = evaluate_shapes(policy, rows, images_per_prompt=settings.images_per_prompt,
                                     answer_samples=settings.answer_samples,
                                     cfg_weight=DEFAULT_CFG_WEIGHT, seed=settings.seed,
                                     model_path=_relative_name(model_path, folder), return_details=True,
                                     image_dir=images if pictures else None)
            if pictures:
                save_failures(result, rows, Path(images), layout.failures_folder(folder, name))
        seen = training_pairs(settings)
        if seen is not None:
            result.update(unseen_accuracy(result, rows, seen))
        result["settings"]["max_rows"] = settings.max_rows  # what was asked for (the split may hold fewer)
        write_json_atomic(result, out_json)
    if todo_grid:
        generate_grid(policy, grid_prompts(rows), layout.grid_folder(folder, name),
                      images_per_prompt=settings.images_per_prompt, seed=settings.seed, cfg_weight=DEFAULT_CFG_WEIGHT)
    if todo_curve:
        write_json_atomic(curve_point(policy, model_path, settings), folder / layout.CURVE_BASE_FILE)
    return result


class _MainProcess:
    """The one process of the demo, as the in-training evaluator sees an accelerator."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def curve_point(policy: Any, model_path: str | Path, settings: DemoSettings) -> dict[str, float]:
    """The base's point of the held-out curve: the first stage's in-training evaluator, run on the base,
    so the curve starts from a number made exactly as its later points are."""
    import tempfile

    from corl.config import load_config, resolve_recipe
    from corl.training.evaluation import ShapesEvaluator

    stage = settings.stages[0]
    cfg = load_config(resolve_recipe(f"{RECIPE_FAMILY}/{stage}"), stage_overrides(stage, model_path, settings))
    with tempfile.TemporaryDirectory() as scratch:
        return ShapesEvaluator(cfg, _MainProcess(), Path(scratch))(policy, 0)


# --------------------------------------------------------------------------------------- pipeline


def run_pipeline(settings: DemoSettings, on_progress: Any = None) -> dict[str, Any]:
    """Evaluate the base, run the stages, evaluate after unified and at the end, calling `on_progress()`
    after each part (the report is rewritten there); return the evaluations and checkpoints."""
    from corl.policy import default_model_path
    from corl.report.demo import eval_file, evaluated_models

    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    timings = read_timings(out)
    timings["runs"] = timings.get("runs", 0) + 1
    names = dict(evaluated_models(settings.stages))

    def timed(part: str, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        add_seconds(out, timings, part, time.perf_counter() - start)
        if on_progress is not None:
            on_progress()
        return value

    start = time.perf_counter()
    base = default_model_path()
    evals = {"base": timed("eval_base", evaluate_checkpoint, base, eval_file(out, "base"), settings, name="base")}
    model, checkpoints = base, {"base": Path(base)}
    for stage in settings.stages:
        model = timed(f"train_{stage}", run_stage, stage, model, settings)
        checkpoints[stage] = model
        if stage == "unified" and "unified" in names:
            evals["unified"] = timed("eval_unified", evaluate_checkpoint, model, eval_file(out, "unified"), settings,
                                     name="unified")
    evals["final"] = timed("eval_final", evaluate_checkpoint, model, eval_file(out, "final"), settings, name="final")
    add_seconds(out, timings, "total", time.perf_counter() - start)
    return {"evals": evals, "checkpoints": checkpoints, "timings": timings}


def read_timings(out: Path) -> dict[str, float]:
    """Seconds per part of earlier runs of the demo in `out` (empty for a new one), plus "runs"."""
    from corl.report.demo import TIMINGS_FILE, read_json

    path = out / TIMINGS_FILE
    return read_json(path) if path.is_file() else {}


def add_seconds(out: Path, timings: dict[str, float], name: str, seconds: float) -> None:
    """timings[name] += seconds, written through to DIR/timings.json at once (a killed run keeps them)."""
    from corl.eval.grading import write_json_atomic
    from corl.report.demo import TIMINGS_FILE

    timings[name] = round(timings.get(name, 0.0) + seconds, 1)
    write_json_atomic(timings, out / TIMINGS_FILE)


# What a demo writes into OUT (and --force deletes): its records, report, evaluations, stages, seed folders.
DEMO_WRITES: tuple[str, ...] = ("run.json", "provenance.json", "timings.json", "report.md", "report.html", "plots",
                                "eval_*.json", "grid", "failures", "curve_base.json", ".eval-images-*", "seed-*",
                                *DEMO_STAGES)


def run_demo(args: argparse.Namespace) -> int:
    from corl.report import write_demo_report
    from corl.report.demo import seed_folder

    seeds = list(args.seeds)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: each seed once, got {' '.join(str(s) for s in seeds)}")
    out: Path = args.out
    template = DemoSettings(out=out, max_rows=args.max_rows, images_per_prompt=args.images_per_prompt,
                            stages=tuple(args.stages), overrides=list(args.overrides),
                            answer_samples=args.answer_samples)
    continued = check_rerun(out, "demo", run_record(template, seeds), args.force, DEMO_WRITES)
    if continued:
        logger.info("continuing the demo in %s (same settings)", out)
    record_provenance(out, seeds)
    write_demo_report(out)  # from the start: a run killed in its first part still has one
    start = time.perf_counter()
    for seed in seeds:
        settings = DemoSettings(**{**asdict(template), "out": seed_folder(out, seed, seeds), "seed": seed})
        run_pipeline(settings, on_progress=lambda: write_demo_report(out))
    report = write_demo_report(out)
    print()
    print(report.summary_text)
    print(f"report: {report.path} and {report.html_path.name}  ({time.perf_counter() - start:.0f} s)")
    return 0


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


class OverridesParser(argparse.ArgumentParser):
    """Lets key=value overrides stand anywhere, also right after an option that takes several values
    (`--seeds 0 1 train.max_steps=5`): plain argparse would hand them to --seeds. They are moved behind a
    `--`, where only positionals are read; a command line that has its own `--` is left as it is."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        if "--" not in args:
            overrides = [a for a in args if _OVERRIDE.match(a)]
            if overrides:
                args = [a for a in args if not _OVERRIDE.match(a)] + ["--", *overrides]
        return super().parse_known_args(args, namespace)


def parse_stages(text: str) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in stages if s not in DEMO_STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {unknown}; choose from {', '.join(DEMO_STAGES)}")
    if len(set(stages)) != len(stages):
        raise argparse.ArgumentTypeError(f"each stage once, got {text}")
    return stages


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run CoRL end to end in the Shapes world on CPU (no downloads)",
                       description="Evaluate the Shapes base model, run the unified stage and the refined "
                                   "t2i / MC / OE stages (shapes-tiny recipes), evaluate again and write "
                                   "OUT/report.md and OUT/report.html. Re-running the same command continues; "
                                   "other settings are refused unless --force.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0], metavar="N",
                   help="seeds of every stage and evaluation (default 0); several run one after another into "
                        "OUT/seed-N and the report gives mean ± std")
    p.add_argument("--max-rows", type=positive_int, default=DemoSettings.max_rows, metavar="N",
                   help=f"held-out rows per evaluation (default {DemoSettings.max_rows}: the whole test split)")
    p.add_argument("--images-per-prompt", type=positive_int, default=DemoSettings.images_per_prompt, metavar="N",
                   help=f"generated images per held-out caption (default {DemoSettings.images_per_prompt})")
    p.add_argument("--answer-samples", type=nonnegative_int, default=DemoSettings.answer_samples, metavar="K",
                   help="answers sampled per held-out question at temperature 1 in each evaluation, for the "
                        f"report's sampled-vs-blind table (default {DemoSettings.answer_samples}; 0: off)")
    p.add_argument("--stages", type=parse_stages, default=DEMO_STAGES,
                   help="comma-separated stages to run, in order (default: unified,t2i,mc,oe)")
    p.add_argument("--force", action="store_true",
                   help="redo from scratch: delete what an earlier demo wrote into OUT, then run")
    add_threads_argument(p)
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every stage, e.g. train.max_steps=5")
    p.__class__ = OverridesParser
    p.set_defaults(func=run_demo, _parser=p)
