"""The demo's gains over several seeds: base vs final held-out scores, mean and std (issue: +10 points).

    python benchmarks/demo_seeds.py --out runs/demo-seeds --seeds 0 1 2 [--max-rows 300] [key=value ...]

Runs `corl demo --seeds ...` (each seed into OUT/seed-N; resumable: finished parts are read back; its
OUT/report.md gives the same table), then prints one line per metric and per question template: base,
after unified and final as mean ± std over seeds, and the change final - base per seed. Every seed
evaluates the same held-out rows; seeds differ in RL sampling and in the sampled evaluation images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# the *_unseen accuracies leave out held-out questions whose (scene, question) a stage trained on
METRICS = ("t2i.overall", "mc.accuracy", "oe.accuracy", "mc.accuracy_unseen", "oe.accuracy_unseen", "format_rate",
           "think_match")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):5.1f} ± {100 * std:4.1f}"


def value_of(result: dict, label: str) -> float | None:
    """A headline metric ("oe.accuracy") or a question template's accuracy ("oe exists"); None if absent."""
    if " " not in label:
        return result.get(label)
    kind, topic = label.split(" ", 1)
    return ((result.get(f"{kind}.by_topic") or {}).get(topic) or {}).get("accuracy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo-seeds"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-rows", type=int, default=300, help="held-out rows per evaluation (default: all 300)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every stage")
    args = parser.parse_args(argv)

    from corl.cli import main as corl_main

    code = corl_main(["demo", "--out", str(args.out), "--seeds", *map(str, args.seeds), "--max-rows",
                      str(args.max_rows), *args.overrides])
    if code:
        return code
    runs, rewards = {}, {}
    for seed in args.seeds:
        out = args.out / f"seed-{seed}" if len(args.seeds) > 1 else args.out
        runs[seed] = {name: json.loads((out / f"eval_{name}.json").read_text())
                      for name in ("base", "unified", "final")}
        rewards[seed] = {stage.name: json.loads((stage / "summary.json").read_text())["reward"]
                         for stage in sorted(out.iterdir()) if (stage / "summary.json").is_file()}

    print(f"\nseeds {args.seeds}, {args.max_rows} held-out rows; scores in %, mean ± std over seeds")
    print(f"{'metric':18s} {'base':>13s} {'after unified':>15s} {'final':>13s}   {'unified - base (mean)':>22s}"
          "   final - base per seed")
    # headline metrics, then the accuracy per question template (evaluations written before `by_topic`
    # existed have none: those rows are left out)
    labels = list(METRICS) + list({f"{kind} {topic}": None for kind in ("mc", "oe") for s in args.seeds
                                   for topic in runs[s]["final"].get(f"{kind}.by_topic") or {}})
    for label in labels:
        cols = {name: [value_of(runs[s][name], label) for s in args.seeds] for name in ("base", "unified", "final")}
        if any(v is None for col in cols.values() for v in col):
            continue
        change = [100 * (f - b) for f, b in zip(cols["final"], cols["base"])]
        unified = [100 * (u - b) for u, b in zip(cols["unified"], cols["base"])]
        print(f"{label:18s} {mean_std(cols['base']):>13s} {mean_std(cols['unified']):>15s} {mean_std(cols['final']):>13s}"
              f"   {' '.join(f'{c:+.1f}' for c in unified):>14s} ({statistics.fmean(unified):+.1f})"
              f"   {' '.join(f'{c:+.1f}' for c in change)} (mean {statistics.fmean(change):+.1f})")
    # the targets, on the headline tasks: the unified stage alone costs no task more than 1 point on
    # average, and the whole demo gains at least 10 points on each
    for label, name in (("t2i.overall", "generation"), ("mc.accuracy", "MC"), ("oe.accuracy", "OE")):
        unified = statistics.fmean(100 * (runs[s]["unified"][label] - runs[s]["base"][label]) for s in args.seeds)
        final = statistics.fmean(100 * (runs[s]["final"][label] - runs[s]["base"][label]) for s in args.seeds)
        print(f"{name:10s} unified stage {unified:+5.1f} ({'ok' if unified >= -1 else 'below -1'}), "
              f"demo {final:+5.1f} ({'ok' if final >= 10 else 'below +10'})")
    print("\ntraining reward, mean over the last 10% of a stage's steps minus the first 10%, per seed")
    rose = True
    for stage in ("unified", "t2i", "mc", "oe"):
        tasks = sorted({task for seed in args.seeds for task in rewards[seed].get(stage, {})})
        for task in tasks:
            changes = [rewards[seed][stage][task]["change"] for seed in args.seeds if task in rewards[seed].get(stage, {})]
            rose &= all(c > 0 for c in changes)
            print(f"{stage:8s} {task:5s} " + " ".join(f"{c:+.3f}" for c in changes)
                  + ("" if all(c > 0 for c in changes) else "   <- not up in every seed"))
    print(f"reward up in every stage, task and seed: {'yes' if rose else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
