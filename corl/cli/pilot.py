"""`corl pilot`: the paper's pilot study in the Shapes world, with equal compute budgets.

Arms, each starting from the Shapes base model:
- base:          no RL;
- gen-only:      t2i RL;
- und-only:      understanding RL on mc and oe rows together (stage mm2t);
- cycle:         alternating blocks of t2i RL and understanding RL (t2i, mm2t, t2i, mm2t);
- unified:       CoRL's unified RL (both tasks every step, one joint reward).

Budget. A unified step samples G images *and* G answers per prompt; a single-task step samples only one
of them. Equal compute therefore means the same number of sampled completions: with `--steps S`, unified
runs S steps and every single-task arm 2S steps (cycle: four blocks of S/2), all at the unified recipe's
prompts per step. Every other setting (G, learning rate, rewards) is the shipped shapes-tiny recipe of the
stage, with beta = 0. Each arm is
evaluated on the same held-out rows as `corl demo`; with several seeds the table gives mean and std.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from corl.cli.demo import RECIPE_FAMILY, DemoSettings, evaluate_checkpoint, run_stage
from corl.cli.argtypes import positive_int

logger = logging.getLogger(__name__)

ARMS: tuple[str, ...] = ("base", "gen-only", "und-only", "cycle", "unified")
SCORES: tuple[tuple[str, str], ...] = (("t2i.overall", "generation"), ("mc.accuracy", "MC"),
                                       ("oe.accuracy", "OE"), ("format_rate", "format"))


def arm_schedule(arm: str, steps: int) -> list[tuple[str, int]]:
    """(stage, steps) blocks of an arm for a unified budget of `steps` steps (module docstring)."""
    half = max(1, steps // 2)
    return {
        "base": [],
        "gen-only": [("t2i", 2 * steps)],
        "und-only": [("mm2t", 2 * steps)],
        "cycle": [("t2i", half), ("mm2t", half), ("t2i", half), ("mm2t", half)],
        "unified": [("unified", steps)],
    }[arm]


def unified_batch_size(overrides: list[str]) -> int:
    """Prompts per step of the shapes-tiny unified recipe (with the run's overrides): every arm's batch,
    so budgets stay equal (the refined t2i and MC / OE recipes sample more prompts per step)."""
    from corl.config import load_config, resolve_recipe

    return load_config(resolve_recipe(f"{RECIPE_FAMILY}/unified"), overrides).train.per_device_batch_size


def run_arm(arm: str, steps: int, settings: DemoSettings, base: Path, batch: int) -> dict[str, Any]:
    """Train one arm's blocks at `batch` prompts per step, then evaluate it."""
    arm_dir = settings.out / f"seed{settings.seed}" / arm
    model = base
    for i, (stage, n) in enumerate(arm_schedule(arm, steps)):
        # beta 0 everywhere: the pilot compares task mixes, not KL regularisation.
        model = run_stage(stage, model, settings, stage_dir=arm_dir / f"{i}-{stage}",
                          extra_overrides=(f"train.max_steps={n}", "grpo.beta=0",
                                           f"train.per_device_batch_size={batch}"))
    return evaluate_checkpoint(model, arm_dir / "eval.json", settings)


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """arm -> score -> {mean, std, n} over seeds."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for arm, runs in results.items():
        table[arm] = {}
        for key, _ in SCORES:
            values = [r[key] for r in runs if r.get(key) is not None]
            table[arm][key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                "n": len(values),
            }
    return table


def markdown_table(table: dict, seeds: list[int], steps: int) -> str:
    lines = [f"Seeds {seeds}; budget: unified {steps} steps = single-task arms {2 * steps} steps "
             "(equal sampled completions). Scores in % on the held-out split, mean ± std over seeds.", "",
             "| arm | " + " | ".join(label for _, label in SCORES) + " |", "|---" * (len(SCORES) + 1) + "|"]
    for arm, scores in table.items():
        cells = []
        for key, _ in SCORES:
            s = scores[key]
            cells.append("n/a" if s["mean"] is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_pilot(table: dict, path: Path) -> Path:
    """Generation score against understanding score (mean of MC and OE), one point per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for arm, scores in table.items():
        gen = scores["t2i.overall"]
        und = [scores[k]["mean"] for k in ("mc.accuracy", "oe.accuracy") if scores[k]["mean"] is not None]
        if gen["mean"] is None or not und:
            continue
        x, y = 100 * sum(und) / len(und), 100 * gen["mean"]
        ax.errorbar(x, y, yerr=100 * (gen["std"] or 0.0), fmt="o", capsize=3)
        ax.annotate(arm, (x, y), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("understanding: mean of MC and OE accuracy (%)")
    ax.set_ylabel("generation pass rate (%)")
    ax.grid(alpha=0.3)
    ax.set_title("pilot study (Shapes world)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_pilot(args: argparse.Namespace) -> int:
    from corl.policy import default_model_path

    base = default_model_path()
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    batch = unified_batch_size(list(args.overrides))
    for seed in args.seeds:
        settings = DemoSettings(out=args.out, seed=seed, eval_rows=args.eval_rows,
                                images_per_prompt=args.images_per_prompt, overrides=list(args.overrides))
        for arm in args.arms:
            logger.info("pilot: seed %d, arm %s", seed, arm)
            results[arm].append(run_arm(arm, args.steps, settings, base, batch))
    table = summarize(results)
    text = markdown_table(table, list(args.seeds), args.steps)
    plot = plot_pilot(table, args.out / "pilot.png")
    (args.out / "pilot.json").write_text(json.dumps({"seeds": args.seeds, "steps": args.steps, "table": table,
                                                     "runs": results}, indent=2, default=str))
    (args.out / "pilot.md").write_text(f"# Pilot study\n\n{text}\n\n![pilot]({plot.name})\n")
    print(text)
    print(f"\n{args.out / 'pilot.md'} ({time.perf_counter() - start:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pilot", help="the paper's pilot study in the Shapes world (equal budgets)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/pilot"), help="output directory (default runs/pilot)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    p.add_argument("--steps", type=positive_int, default=40, help="unified-stage steps; single-task arms get twice as many")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms to run (default all)")
    p.add_argument("--eval-rows", type=positive_int, default=DemoSettings.eval_rows, help="held-out rows per evaluation")
    p.add_argument("--images-per-prompt", type=positive_int, default=DemoSettings.images_per_prompt,
                   help="generated images per held-out caption")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every stage (repeatable), e.g. --set train.per_device_batch_size=2")
    p.set_defaults(func=run_pilot, _parser=p)
