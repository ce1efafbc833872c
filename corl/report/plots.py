"""The report's figures (matplotlib, files only): every logged metric family of a stage on its own axis,
the held-out curve during training, the fixed prompt grid, and bars of the held-out metrics.

A figure is redrawn only when one of the files it is drawn from is newer than it: the demo rewrites its
report after every stage, and redrawing every stage's figures each time would cost more than a stage of
the smallest runs.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

import corl.report.names as names
from corl.report.tables import UNSEEN_KEYS, metric_keys

logger = logging.getLogger(__name__)

DPI = 100


def is_fresh(target: Path, sources: Sequence[Path]) -> bool:
    """`target` exists and is at least as new as every source that exists."""
    if not target.is_file():
        return False
    stamps = [s.stat().st_mtime for s in sources if s.is_file()]
    return not stamps or target.stat().st_mtime >= max(stamps)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def _smooth(values: Sequence[float], k: int) -> list[float]:
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - k + 1): i + 1] if v is not None]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


# ------------------------------------------------------------------------------- metric families


def metric_family(key: str) -> tuple[str, str | None, str | None] | None:
    """(family, task, series) of a metrics.jsonl key; None for keys no family plot shows (step, epoch,
    held-out evaluations, spreads already shown another way). Unknown keys get a family of their own
    prefix, so a metric added to the trainer still appears."""
    parts = key.split("/")
    head = parts[0]
    if key in ("step", "epoch") or head == "eval":
        return None
    if head == "rewards" and len(parts) == 4:  # rewards/{task}/{reward}/{mean|std|failed}
        task, reward, stat = parts[1:]
        if stat == "mean":  # the task is in the title: the legend names the components only
            return f"reward per component: {names.task(task)}", None, names.reward(reward)
        if stat == "failed":
            return "problems (count per step)", task, f"{names.reward(reward)} failed"
        return None
    if head == "reward" and len(parts) == 3:  # reward/{task}/{mean|std|group_std}
        task, stat = parts[1:]
        if stat == "mean":
            if task == "joint":
                return "joint reward (unified stage)", None, "joint"
            return f"reward per component: {names.task(task)}", None, "total (weighted sum)"
        if stat == "group_std":
            return "reward std within a prompt's group", task, None
        return None
    if head == "attrib" and len(parts) == 2:  # the unified stage's advantage attribution (corl.algos)
        name = parts[1]
        for task in ("t2i", "mm2t"):
            if name == f"{task}_share":
                return "each task's share of the joint reward's spread", task, None
            if name == f"{task}_spread":
                return "each task's reward spread within a group (joint reward)", task, None
            if name == f"corr_{task}_adv":
                return "correlation of a task's reward with its tokens' advantage", task, None
    task = next((p for p in parts[1:] if p in names.TASKS), None)
    rest = [p for p in parts[1:] if p != task]
    if head == "reward_masked":
        return "problems (count per step)", task, "masked rewards"
    if head == "prompts":
        return "problems (count per step)", task, f"prompts {' '.join(rest).replace('_', ' ')}"
    if head == "time":
        return "seconds per step, by phase", None, names.TIMES.get(rest[0], rest[0].replace("_", " "))
    if head == "completions":
        stat = rest[0] if rest else ""
        title = {"mean_length": "answer length (tokens)",
                 "clipped_ratio": "answers cut at the length limit (fraction)"}.get(stat, f"completions: {stat}")
        return title, task, None
    titles = {"kl": "KL to the reference", "entropy": "token entropy", "loss": "loss",
              "grad_norm": "gradient norm", "learning_rate": "learning rate",
              "frac_reward_zero_std": "groups with zero reward spread (fraction)",
              "advantages": "mean |advantage|", "clip_ratio": "clipped probability ratios (fraction)"}
    series = " ".join(rest).replace("abs_mean", "").replace("_mean", "").strip() or None
    return titles.get(head, head.replace("_", " ")), task, series


def _label(task: str | None, series: str | None) -> str:
    if task and series:
        return f"{names.task(task)}: {series}"
    return series or (names.task(task) if task else "all tasks")


def metric_families(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """family -> series label -> [(step, value)] of a stage's metric rows. A family's all-tasks series
    is dropped when the stage has one task (it repeats that task's series)."""
    found: dict[str, dict[tuple[str | None, str | None], list[tuple[int, float]]]] = {}
    for row in rows:
        for key, value in row.items():
            placed = metric_family(key)
            if placed is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            family, task, series = placed
            found.setdefault(family, {}).setdefault((task, series), []).append((int(row["step"]), float(value)))
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for family, series in found.items():
        tasks = {t for t, _ in series if t is not None}
        only = next(iter(tasks)) if len(tasks) == 1 else None
        out[family] = {_label(t, s): points for (t, s), points in series.items()
                       if not (t is None and only is not None and (only, s) in series)}
    return out


def _family_order(family: str) -> tuple[int, str]:
    for i, prefix in enumerate(("reward per component", "joint reward", "reward std", "groups with zero",
                                "each task's share", "each task's reward spread", "correlation of a task",
                                "mean |advantage|", "KL", "token entropy", "clipped probability", "loss",
                                "gradient norm", "learning rate", "answer length", "answers cut",
                                "seconds per step", "problems")):
        if family.startswith(prefix):
            return i, family
    return 99, family


def plot_stage_metrics(metrics_path: Path, path: Path, title: str, smooth: int = 9) -> Path | None:
    """Every metric family a stage logged (metric_family), one axis each, in one figure."""
    from corl.training.tracking import read_metrics

    if is_fresh(path, [metrics_path]):
        return path
    _, rows = read_metrics(metrics_path)
    families = metric_families(rows)
    if not families:
        return None
    order = sorted(families, key=_family_order)
    cols = 4
    nrows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(order):]:
        ax.set_visible(False)
    for ax, family in zip(axes.flat, order):
        series = families[family]
        if family.startswith("seconds per step"):
            _plot_times(ax, series)
        elif family.startswith("problems") and not any(v for points in series.values() for _, v in points):
            # Eight flat lines at zero say less than one sentence.
            ax.text(0.5, 0.5, "none in any step:\nevery reward computed,\nno prompt cut", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="#2a7a2a")
            series = {}
        else:
            for label, points in series.items():
                steps, values = zip(*points)
                if len(values) > 2 * smooth:
                    line, = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
                    ax.plot(steps, _smooth(values, smooth), color=line.get_color(), linewidth=1.6, label=label)
                else:
                    ax.plot(steps, values, marker="o", markersize=2.5, linewidth=1.2, label=label)
        ax.set_title(textwrap.fill(family, 42), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if family.startswith("seconds"):
            ax.legend(fontsize=6, loc="upper left", ncol=2)
        elif len(series) > 1:
            ax.legend(fontsize=6.5, loc="best")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _plot_times(ax: Any, series: Mapping[str, list[tuple[int, float]]]) -> None:
    """Phases stacked (their sum is the time the timers saw), the whole step as a line over them."""
    whole = series.get("step")
    phases = {k: dict(v) for k, v in series.items() if k != "step"}
    steps = sorted({s for points in phases.values() for s in points})
    if phases:
        ax.stackplot(steps, [[phases[k].get(s, 0.0) for s in steps] for k in phases], labels=list(phases), alpha=0.8)
    if whole:
        ax.plot(*zip(*whole), color="black", linewidth=0.8, label="whole step")
    top = max([v for _, v in whole or []] + [sum(p.get(s, 0.0) for p in phases.values()) for s in steps] + [1e-9])
    ax.set_ylim(0, 1.7 * top)  # room above the stack for the legend
    ax.set_ylabel("s", fontsize=8)


# ---------------------------------------------------------------------------------- held-out curve

CURVE_KEYS: tuple[str, ...] = ("t2i.overall", "mc.accuracy", "oe.accuracy", "format_rate")


def plot_heldout_curve(runs: Mapping[str, Sequence[tuple[int, Mapping[str, float]]]],
                       boundaries: Sequence[tuple[int, str]], path: Path, sources: Sequence[Path] = ()) -> Path | None:
    """One axis per headline metric: its value (%) against the step counted over all stages, one line per
    run (seed). runs: label -> [(step, {metric key: value})]; boundaries: (first step, stage name) of each
    stage, drawn as dotted lines."""
    if is_fresh(path, sources):
        return path
    if not any(len(points) > 0 for points in runs.values()):
        return None
    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4.0 * len(CURVE_KEYS), 3.2), squeeze=False)
    for ax, key in zip(axes[0], CURVE_KEYS):
        for label, points in runs.items():
            pts = [(s, 100 * m[key]) for s, m in points if m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, linewidth=1.3, label=label)
        ax.set_ylim(0, 100)
        for start, stage in boundaries:
            ax.axvline(start, color="gray", linestyle=":", linewidth=0.9)
            ax.text(start, 0.02, f" {stage}", fontsize=6.5, color="gray", va="bottom", rotation=90,
                    transform=ax.get_xaxis_transform())
        ax.set_title(names.metric(key), fontsize=9)
        ax.set_xlabel("step (all stages)", fontsize=8)
        ax.set_ylabel("%", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------ prompt grid


def _framed_strip(images: Sequence[Any], passed: Sequence[bool | None], scale: int = 2) -> Any:
    """The images side by side, each framed green (passed) or red (failed) by the analyzer."""
    import numpy as np

    tiles = []
    for image, ok in zip(images, passed):
        arr = np.asarray(image.convert("RGB").resize((image.width * scale, image.height * scale), 0))
        color = (40, 160, 60) if ok else (210, 40, 40) if ok is not None else (150, 150, 150)
        framed = np.empty((arr.shape[0] + 6, arr.shape[1] + 6, 3), dtype=np.uint8)
        framed[:] = color
        framed[3:-3, 3:-3] = arr
        tiles.append(framed)
        tiles.append(np.full((framed.shape[0], 4, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def plot_prompt_grid(prompts: Sequence[Mapping[str, str]], columns: Mapping[str, Mapping[str, Any]],
                     path: Path, sources: Sequence[Path] = ()) -> Path | None:
    """Rows: the fixed prompts; columns: the evaluated models side by side; the caption under each row.

    prompts: [{"caption", "category"}]; columns: model label -> {"images": [[PIL image per sample] per
    prompt], "passed": [[bool] per prompt]} (a model not evaluated yet is left out)."""
    if is_fresh(path, sources):
        return path
    if not prompts or not columns:
        return None
    labels = list(columns)
    per_cell = max(len(images) for column in columns.values() for images in column["images"])
    fig = plt.figure(figsize=(len(labels) * (0.95 * per_cell + 0.3), 1.4 * len(prompts) + 0.3))
    grid = fig.add_gridspec(2 * len(prompts), len(labels), height_ratios=[1.0, 0.32] * len(prompts),
                            hspace=0.05, wspace=0.06)
    for r, prompt in enumerate(prompts):
        for c, label in enumerate(labels):
            ax = fig.add_subplot(grid[2 * r, c])
            images, passed = columns[label]["images"][r], columns[label]["passed"][r]
            ax.imshow(_framed_strip(images, passed), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"{label}: {sum(bool(p) for p in passed)}/{len(passed)} pass" if r == 0
                         else f"{sum(bool(p) for p in passed)}/{len(passed)} pass", fontsize=8, pad=2)
        text_ax = fig.add_subplot(grid[2 * r + 1, :])
        text_ax.axis("off")
        text_ax.text(0.5, 0.75, f"{names.category(prompt['category'])}: \u201c{prompt['caption']}\u201d",
                     ha="center", va="center", fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ older plots


def plot_reward_curves(run_dir: Path, stages: Sequence[str], path: Path, smooth: int = 5) -> Path | None:
    """The mean total reward of each task per step: one axis per (stage, task), rows by stage."""
    from corl.training.tracking import read_metrics

    panels = []
    for stage in stages:
        metrics_path = run_dir / stage / "metrics.jsonl"
        if metrics_path.is_file():
            _, rows = read_metrics(metrics_path)
            tasks = sorted({k.split("/")[1] for r in rows for k in r if k.startswith("reward/") and k.endswith("/mean")})
            panels += [(stage, task, rows) for task in tasks]
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (stage, task, rows) in zip(axes.flat, panels):
        pts = [(r["step"], r[f"reward/{task}/mean"]) for r in rows if r.get(f"reward/{task}/mean") is not None]
        if pts:
            steps, values = zip(*pts)
            line, = ax.plot(steps, values, alpha=0.3, linewidth=1)
            ax.plot(steps, _smooth(values, max(1, min(smooth, len(values)))), color=line.get_color(), linewidth=2)
        ax.set_title(f"{names.stage(stage)}: {names.task(task)} reward", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("mean reward", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_bars(evals: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars: headline metrics and each generation category, one bar per evaluated model."""
    import numpy as np

    keys = [k for k in metric_keys(evals) if k not in UNSEEN_KEYS]
    labels = list(evals)
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(keys)), 3.8))
    for i, label in enumerate(labels):
        values = [100 * float(evals[label].get(k) or 0.0) for k in keys]
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, [names.metric(k) for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
