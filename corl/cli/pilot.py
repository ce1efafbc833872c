"""`corl pilot`: the paper's pilot study in the Shapes world, with equal compute budgets.

Arms, each starting from the Shapes base model:
- base:          no RL;
- gen-only:      t2i RL;
- und-only:      understanding RL on mc and oe rows together (stage mm2t);
- cycle:         alternating blocks of t2i RL and understanding RL (t2i, mm2t, t2i, mm2t);
- unified:       CoRL's unified RL as the paper sets it (both tasks every step, one joint reward
                 R_t2i + 0.8 R_mm2t), whatever the shapes-tiny recipe's own unified_mode.
Variants of the unified arm (not run unless named with --arms), each the unified arm with one change
(the last, two):
- unified-joint-adv:   grpo.unified_mode=joint_advantage (A = A_t2i + lambda A_mm2t);
- unified-separate:    grpo.unified_mode=separate (each task its own advantage; the shapes-tiny recipe's
                       default, chosen from this comparison: README);
- unified-task-scale:  grpo.unified_task_scale=group (each task's rewards as z-scores before the joint sum);
- unified-lambda-0.4:  grpo.unified_lambda=0.4;
- unified-kl:          grpo.beta=0.02 (a KL to the base model);
- unified-separate-kl: separate advantages and beta 0.02, as the shapes-tiny unified recipe sets them.

Budget. A unified step samples G images *and* G answers per prompt; a single-task step samples only one
of them. Equal compute therefore means the same number of sampled completions: with `--steps S`, unified
runs S steps and every single-task arm 2S steps (cycle: four blocks of S/2), all at the unified recipe's
prompts per step. Every other setting (G, learning rate, rewards) is the shipped shapes-tiny recipe of the
stage, with beta = 0. Each arm is
evaluated on the same held-out rows as `corl demo`; with several seeds (each into OUT/seed-N) the table
gives mean and std. Re-runs follow the demo's rule: the same command continues, other settings are refused
with the differences listed unless `--force` (redo).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from corl.cli.argtypes import add_threads_argument, nonnegative_int, positive_int
from corl.cli.demo import (
    RECIPE_FAMILY,
    DemoSettings,
    OverridesParser,
    check_rerun,
    evaluate_checkpoint,
    record_provenance,
    run_stage,
)

logger = logging.getLogger(__name__)

DEFAULT_ARMS: tuple[str, ...] = ("base", "gen-only", "und-only", "cycle", "unified")
UNIFIED_VARIANTS: dict[str, tuple[str, ...]] = {
    "unified-joint-adv": ("grpo.unified_mode=joint_advantage",),
    "unified-separate": ("grpo.unified_mode=separate",),
    "unified-task-scale": ("grpo.unified_task_scale=group",),
    "unified-lambda-0.4": ("grpo.unified_lambda=0.4",),
    "unified-kl": ("grpo.beta=0.02",),
    "unified-separate-kl": ("grpo.unified_mode=separate", "grpo.beta=0.02"),
}
# The paper's unified setting, which every unified arm starts from (the variants then change one thing).
PAPER_UNIFIED: tuple[str, ...] = ("grpo.unified_mode=joint_reward", "grpo.unified_lambda=0.8",
                                  "grpo.unified_task_scale=none")
ARMS: tuple[str, ...] = (*DEFAULT_ARMS, *UNIFIED_VARIANTS)
def arm_schedule(arm: str, steps: int) -> list[tuple[str, int]]:
    """(stage, steps) blocks of an arm for a unified budget of `steps` steps (module docstring)."""
    half = max(1, steps // 2)
    return {
        "base": [],
        "gen-only": [("t2i", 2 * steps)],
        "und-only": [("mm2t", 2 * steps)],
        "cycle": [("t2i", half), ("mm2t", half), ("t2i", half), ("mm2t", half)],
        "unified": [("unified", steps)],
        **{variant: [("unified", steps)] for variant in UNIFIED_VARIANTS},
    }[arm]


def arm_overrides(arm: str, steps: int, batch: int) -> tuple[str, ...]:
    """Overrides of one block of an arm: its steps, beta 0 (the pilot compares task mixes), the unified
    recipe's prompts per step; for the unified arms the paper's unified setting, then the variant's own
    change (which may set beta)."""
    unified = PAPER_UNIFIED if arm == "unified" or arm in UNIFIED_VARIANTS else ()
    return (f"train.max_steps={steps}", "grpo.beta=0", f"train.per_device_batch_size={batch}", *unified,
            *UNIFIED_VARIANTS.get(arm, ()))


def unified_batch_size(overrides: list[str]) -> int:
    """Prompts per step of the shapes-tiny unified recipe (with the run's overrides): every arm's batch,
    so budgets stay equal (the refined t2i and MC / OE recipes sample more prompts per step)."""
    from corl.config import load_config, resolve_recipe

    return load_config(resolve_recipe(f"{RECIPE_FAMILY}/unified"), overrides).train.per_device_batch_size


def run_arm(arm: str, steps: int, settings: DemoSettings, base: Path, batch: int) -> dict[str, Any]:
    """Train one arm's blocks at `batch` prompts per step into settings.out/arm, then evaluate it."""
    arm_dir = settings.out / arm
    model = base
    for i, (stage, n) in enumerate(arm_schedule(arm, steps)):
        model = run_stage(stage, model, settings, stage_dir=arm_dir / f"{i}-{stage}",
                          extra_overrides=arm_overrides(arm, n, batch))
    return evaluate_checkpoint(model, arm_dir / "eval.json", settings)


# What a pilot writes into OUT (and --force deletes).
PILOT_WRITES: tuple[str, ...] = ("run.json", "provenance.json", "pilot.md", "pilot.html", "pilot.json", "pilot.png",
                                 "seed-*")


def run_pilot(args: argparse.Namespace) -> int:
    from corl.policy import default_model_path
    from corl.report.pilot import write_pilot_report  # matplotlib: imported when the command runs

    seeds = list(args.seeds)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: each seed once, got {' '.join(str(s) for s in seeds)}")
    out: Path = args.out
    record = {"seeds": seeds, "steps": args.steps, "arms": list(args.arms), "max_rows": args.max_rows,
              "images_per_prompt": args.images_per_prompt, "overrides": list(args.overrides)}
    check_rerun(out, "pilot", record, args.force, PILOT_WRITES)
    record_provenance(out, seeds)
    base = default_model_path()
    start = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    batch = unified_batch_size(list(args.overrides))
    for seed in seeds:
        # The in-training curve and the pictures are the demo's; the pilot compares final scores only.
        settings = DemoSettings(out=out / f"seed-{seed}", seed=seed, max_rows=args.max_rows,
                                images_per_prompt=args.images_per_prompt, overrides=list(args.overrides),
                                curve_rows=0, pictures=False, answer_samples=0)
        for arm in args.arms:
            logger.info("pilot: seed %d, arm %s", seed, arm)
            results[arm].append(run_arm(arm, args.steps, settings, base, batch))
            text = write_pilot_report(out, record, results)
    print(text)
    print(f"\n{out / 'pilot.md'} and pilot.html ({time.perf_counter() - start:.0f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pilot", help="the paper's pilot study in the Shapes world (equal budgets)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/pilot"), help="output directory (default runs/pilot)")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0], metavar="N",
                   help="seeds, each into OUT/seed-N (default 0)")
    p.add_argument("--steps", type=positive_int, default=40, help="unified-stage steps; single-task arms get twice as many")
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=ARMS,
                   help=f"arms to run (default: {' '.join(DEFAULT_ARMS)}; unified variants: {' '.join(UNIFIED_VARIANTS)})")
    p.add_argument("--max-rows", type=positive_int, default=DemoSettings.max_rows, metavar="N",
                   help=f"held-out rows per evaluation (default {DemoSettings.max_rows})")
    p.add_argument("--images-per-prompt", type=positive_int, default=DemoSettings.images_per_prompt, metavar="N",
                   help=f"generated images per held-out caption (default {DemoSettings.images_per_prompt})")
    p.add_argument("--force", action="store_true",
                   help="redo from scratch: delete what an earlier pilot wrote into OUT, then run")
    add_threads_argument(p)
    p.add_argument("overrides", nargs="*",
                   help="key=value overrides applied to every stage, e.g. train.per_device_batch_size=2")
    p.__class__ = OverridesParser
    p.set_defaults(func=run_pilot, _parser=p)
