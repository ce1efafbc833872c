"""Human-readable reports of a demo or pilot run: a markdown table and plots a person reads at a glance.

Inputs are the files runs already write (`eval_*.json` in the `results.json` schema of `corl eval`,
each stage's `metrics.jsonl` and `summary.json`); nothing is recomputed here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("t2i.overall", "generation pass rate (GenEval-style, CFG 5)"),
    ("mc.accuracy", "multiple-choice accuracy (greedy)"),
    ("oe.accuracy", "open-ended accuracy (greedy)"),
    ("format_rate", "format rate (<think>..</think><answer>..</answer>)"),
)


@dataclass
class Report:
    path: Path
    summary_text: str


def category_keys(evals: Mapping[str, Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for result in evals.values():
        for key in result:
            if key.startswith("t2i.") and key not in ("t2i.overall", "t2i.n_images") and key not in keys:
                keys.append(key)
    return keys


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _comparison_header(first_column: str, names: Sequence[str]) -> list[str]:
    """The two header lines of a table with one column per evaluated model, then the change first -> last."""
    return ["| " + first_column + " | " + " | ".join(names) + f" | change ({names[0]} -> {names[-1]}) |",
            "|" + "---|" * (len(names) + 2)]


def _comparison_row(label: str, values: Sequence[Any]) -> str:
    """One row: each value in %, then last - first in points ("n/a" when either is missing)."""
    change = "n/a" if values[0] is None or values[-1] is None else f"{100 * (values[-1] - values[0]):+.1f}"
    return f"| {label} | " + " | ".join(_pct(v) for v in values) + f" | {change} |"


def metrics_table(evals: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: one row per metric, one column per evaluated model, then the change first -> last."""
    names = list(evals)
    lines = _comparison_header("metric (%)", names)
    rows = [(key, label) for key, label in HEADLINE_METRICS] + [(k, k) for k in category_keys(evals)]
    for key, label in rows:
        lines.append(_comparison_row(label, [evals[n].get(key) for n in names]))
    return "\n".join(lines)


def topic_table(evals: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Markdown table of MC and OE accuracy per question topic (`mc.by_topic` / `oe.by_topic`), one column
    per evaluated model; None when no result has them."""
    names = list(evals)
    rows: list[tuple[str, str]] = []
    for kind in ("mc", "oe"):
        for result in evals.values():
            for topic in result.get(f"{kind}.by_topic") or {}:
                if (kind, topic) not in rows:
                    rows.append((kind, topic))
    if not rows:
        return None
    lines = _comparison_header("question (%)", names)
    for kind, topic in rows:
        cells = [(evals[n].get(f"{kind}.by_topic") or {}).get(topic) for n in names]
        n = next((c["n"] for c in cells if c is not None), 0)
        lines.append(_comparison_row(f"{kind.upper()} {topic} ({n})", [None if c is None else c["accuracy"] for c in cells]))
    return "\n".join(lines)


def reward_table(rewards: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    lines = ["| stage | task | mean reward, first 10% of steps | last 10% | change |", "|---|---|---|---|---|"]
    for stage, tasks in rewards.items():
        for task, s in tasks.items():
            if s.get("first") is None:
                continue
            lines.append(f"| {stage} | {task} | {s['first']:.3f} | {s['last']:.3f} | {s['change']:+.3f} |")
    return "\n".join(lines)


def plot_reward_curves(run_dir: Path, stages: Sequence[str], path: Path, smooth: int = 5) -> Path | None:
    """One panel per stage: reward/{task}/mean per step (thin) and its moving average (thick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from corl.training.tracking import read_metrics

    panels = [(s, run_dir / s / "metrics.jsonl") for s in stages if (run_dir / s / "metrics.jsonl").is_file()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (stage, metrics_path) in zip(axes[0], panels):
        _, rows = read_metrics(metrics_path)
        tasks = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("reward/") and k.endswith("/mean")})
        for task in tasks:
            pts = [(r["step"], r[f"reward/{task}/mean"]) for r in rows if r.get(f"reward/{task}/mean") is not None]
            if not pts:
                continue
            steps, values = zip(*pts)
            line, = ax.plot(steps, values, alpha=0.3, linewidth=1)
            k = max(1, min(smooth, len(values)))
            avg = [sum(values[max(0, i - k + 1): i + 1]) / len(values[max(0, i - k + 1): i + 1])
                   for i in range(len(values))]
            ax.plot(steps, avg, color=line.get_color(), linewidth=2, label=task)
        ax.set_title(f"{stage} stage")
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric_bars(evals: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars: headline metrics and each generation category, one bar per evaluated model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k, _ in HEADLINE_METRICS] + category_keys(evals)
    names = list(evals)
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(keys)), 3.8))
    for i, name in enumerate(names):
        values = [100 * float(evals[name].get(k) or 0.0) for k in keys]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [k.replace("t2i.", "gen: ").replace(".accuracy", "") for k in keys], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_demo_report(out: Path, result: Mapping[str, Any]) -> Report:
    """DIR/report.md with the metrics table, reward changes, plots and timings."""
    evals = {"base": result["evals"]["base"]}
    if "unified" in result["evals"]:
        evals["after unified"] = result["evals"]["unified"]
    evals["after refined" if len(result["checkpoints"]) > 2 else "final"] = result["evals"]["final"]
    stages = [s for s in result["checkpoints"] if s != "base"]
    curves = plot_reward_curves(out, stages, out / "plots" / "reward_curves.png")
    bars = plot_metric_bars(evals, out / "plots" / "metrics.png")
    settings = result["evals"]["base"].get("settings", {})
    table = metrics_table(evals)
    rewards = reward_table(result.get("rewards", {}))
    timings = dict(result.get("timings", {}))
    runs = int(timings.pop("runs", 1))
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    if runs > 1:
        timing += f" (summed over the {runs} runs of the command that built this folder)"
    text = [
        "# corl demo report",
        "",
        "CoRL in the Shapes world: the shipped Shapes base model, the unified stage, then the refined stages "
        f"({' -> '.join(stages)}). Held-out split: {settings.get('n_rows', '?')} test rows, "
        f"{settings.get('images_per_prompt', '?')} images per caption (CFG {settings.get('cfg_weight', '?')}), "
        "greedy answers.",
        "",
        "## Held-out metrics",
        "",
        table,
        "",
        f"![metrics](plots/{bars.name})",
        "",
    ]
    topics = topic_table(evals)
    if topics is not None:
        text += ["Understanding accuracy per question template (rows in parentheses):", "", topics, ""]
    text += [
        "## Training rewards",
        "",
        rewards,
        "",
    ]
    if curves is not None:
        text += [f"![reward curves](plots/{curves.name})", ""]
    text += ["## Checkpoints", ""] + [f"- {name}: `{path}`" for name, path in result["checkpoints"].items()]
    text += ["", f"Timings: {timing}", ""]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return Report(path=path, summary_text=table + "\n\n" + rewards)
