"""Tables of evaluation results (the Shapes suite's `results.json` schema of `corl eval`) and training
rewards (a stage's summary.json), as report blocks or Markdown text.

Every held-out number comes with its count and a 95% interval: a Wilson interval for a pass rate, and
for the generation score, the unweighted mean of the category pass rates, the interval of
`stats.mean_of_rates_interval` (Wilson's when the categories hold as many images each). The
intervals treat answers and images as independent draws; the images of one caption are not quite, so the
true uncertainty of generation scores is somewhat wider.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import corl.report.names as names
from corl.report.document import Table, markdown_table
from corl.report.stats import mean_of_rates_interval, mean_std, wilson_interval

HEADLINE_KEYS: tuple[str, ...] = ("t2i.overall", "mc.accuracy", "oe.accuracy", "format_rate")
# The headline keys with the longer wording older reports used (kept for the callers that print them).
HEADLINE_METRICS: tuple[tuple[str, str], ...] = (
    ("t2i.overall", "generation pass rate (GenEval-style, CFG 5)"),
    ("mc.accuracy", "multiple-choice accuracy (greedy)"),
    ("oe.accuracy", "open-ended accuracy (greedy)"),
    ("format_rate", "format rate (<think>..</think><answer>..</answer>)"),
)


def category_keys(evals: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """t2i.<category> keys present in any result, in their first-seen order."""
    keys: list[str] = []
    for result in evals.values():
        for key in result:
            if key.startswith("t2i.") and key not in ("t2i.overall", "t2i.n_images") and key not in keys:
                keys.append(key)
    return keys


# Accuracy over the held-out questions whose (scene, question) pair no training split holds (`corl demo`
# adds them; `corl.eval.shapes_suite.unseen_accuracy`), shown when a result has them.
UNSEEN_KEYS: tuple[str, ...] = ("mc.accuracy_unseen", "oe.accuracy_unseen")


def metric_keys(evals: Mapping[str, Mapping[str, Any]]) -> list[str]:
    unseen = [k for k in UNSEEN_KEYS if any(k in r for r in evals.values())]
    return [*HEADLINE_KEYS, *unseen, *category_keys(evals)]


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _change(first: Any, last: Any) -> str:
    return "n/a" if first is None or last is None else f"{100 * (last - first):+.1f}"


# ------------------------------------------------------------------------------ counts and intervals


def category_counts(result: Mapping[str, Any]) -> dict[str, int]:
    """Generated images per category, from the per-row details (empty without them)."""
    counts: dict[str, int] = {}
    for row in result.get("details") or []:
        counts[row["category"]] = counts.get(row["category"], 0) + len(row.get("t2i_passed") or [])
    return counts


def count_of(result: Mapping[str, Any], key: str) -> int | None:
    """How many images (generation) or answers (understanding) a metric of `result` is computed over."""
    if key == "t2i.overall":
        return result.get("t2i.n_images")
    if key.startswith("t2i."):
        return category_counts(result).get(key[4:])
    if key in ("mc.accuracy", "oe.accuracy"):
        return result.get(key.split(".")[0] + ".n")
    if key in UNSEEN_KEYS:
        return result.get(key.split(".")[0] + ".n_unseen")
    if key == "format_rate":
        details = result.get("details")
        return len(details) if details else (result.get("settings") or {}).get("n_rows")
    return None


def interval_of(result: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The 95% interval of one metric (module docstring), None when its counts are unknown."""
    value = result.get(key)
    if value is None:
        return None
    if key == "t2i.overall":
        counts = category_counts(result)
        cats = [k[4:] for k in category_keys({"r": result}) if k[4:] in counts]
        if not cats or len(cats) != len(category_keys({"r": result})):
            return None
        return mean_of_rates_interval([round(result[f"t2i.{c}"] * counts[c]) for c in cats], [counts[c] for c in cats])
    n = count_of(result, key)
    if not n:
        return None
    return wilson_interval(round(float(value) * n), n)


def _with_interval(result: Mapping[str, Any] | None, key: str) -> str:
    if result is None or result.get(key) is None:
        return "n/a"
    interval = interval_of(result, key)
    text = _pct(result[key])
    return text if interval is None else f"{text} ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})"


def heldout_table(evals: Mapping[str, Mapping[str, Any] | None]) -> Table:
    """One row per metric: its count, each evaluated model's score with its 95% interval, and the change
    first -> last in points. `evals`: column name -> result (None: not evaluated yet)."""
    names_ = list(evals)
    done = {k: v for k, v in evals.items() if v is not None}
    header = ["metric (%)", "n", *names_, f"change ({names_[0]} → {names_[-1]})"]
    rows = []
    for key in metric_keys(done):
        counts = {count_of(r, key) for r in done.values()} - {None}
        n = str(counts.pop()) if len(counts) == 1 else "/".join(str(c) for c in sorted(counts)) or "?"
        first, last = evals[names_[0]], evals[names_[-1]]
        change = _change(first and first.get(key), last and last.get(key))
        rows.append([names.metric(key), n, *(_with_interval(evals[c], key) for c in names_), change])
    return Table(header, rows)


def seeds_table(per_seed: Mapping[int, Mapping[str, Mapping[str, Any] | None]], columns: Sequence[str]) -> Table:
    """Mean +/- std over seeds of each metric per evaluated model, and of the change first -> last with
    each seed's own change. `per_seed`: seed -> column -> result (None or absent: not evaluated)."""
    seeds = list(per_seed)
    every = {f"{s}/{c}": r for s in seeds for c, r in per_seed[s].items() if r is not None}
    header = ["metric (%)", "n per seed", *columns, f"change ({columns[0]} → {columns[-1]})"]
    rows = []
    for key in metric_keys(every):
        counts = {count_of(r, key) for r in every.values()} - {None}
        n = str(counts.pop()) if len(counts) == 1 else "/".join(str(c) for c in sorted(counts)) or "?"
        cells = []
        for column in columns:
            values = [100 * r[key] for s in seeds if (r := per_seed[s].get(column)) and r.get(key) is not None]
            cells.append(_mean_std_text(values, len(seeds)))
        changes = []
        for s in seeds:
            first, last = per_seed[s].get(columns[0]), per_seed[s].get(columns[-1])
            if first and last and first.get(key) is not None and last.get(key) is not None:
                changes.append(100 * (last[key] - first[key]))
        change = _mean_std_text(changes, len(seeds), signed=True)
        if len(changes) > 1:
            change += " (" + ", ".join(f"{c:+.1f}" for c in changes) + ")"
        rows.append([names.metric(key), n, *cells, change])
    return Table(header, rows)


def _mean_std_text(values: Sequence[float], seeds: int, signed: bool = False) -> str:
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    text += f" ± {std:.1f}" if len(values) > 1 else ""
    return text + (f" ({len(values)} of {seeds} seeds)" if len(values) < seeds else "")


# ------------------------------------------------------------------------------ topics and rewards


def _templates(results: Iterable[Mapping[str, Any]], key: str) -> list[tuple[str, str]]:
    """(question type, template) pairs found under `mc.<key>` / `oe.<key>` of the results, MC first, each
    in order of first appearance."""
    results = list(results)
    return list(dict.fromkeys((kind, topic) for kind in ("mc", "oe") for result in results
                              for topic in result.get(f"{kind}.{key}") or {}))


def topic_rows(evals: Mapping[str, Mapping[str, Any]], field: str = "accuracy") -> Table | None:
    """One value per question template (`mc.by_topic` / `oe.by_topic`), one column per evaluated model, with
    the change: `field` "accuracy", or "think_match" (the share of answers whose think text describes the
    image); None when no result has it."""
    names_ = list(evals)
    found = [(kind, topic) for kind, topic in _templates(evals.values(), "by_topic")
             if any(field in ((r.get(f"{kind}.by_topic") or {}).get(topic) or {}) for r in evals.values())]
    if not found:
        return None
    rows = []
    for kind, topic in found:
        cells = [(evals[c].get(f"{kind}.by_topic") or {}).get(topic) for c in names_]
        n = next((c["n"] for c in cells if c is not None), 0)
        values = [None if c is None else c.get(field) for c in cells]
        change = [_change(values[0], values[-1])] if len(names_) > 1 else []
        rows.append([f"{kind.upper()} {topic} ({n})", *(_pct(v) for v in values), *change])
    change_header = [f"change ({names_[0]} → {names_[-1]})"] if len(names_) > 1 else []
    return Table(["question (%)", *names_, *change_header], rows)


def sampled_rows(evals: Mapping[str, Mapping[str, Any]]) -> Table | None:
    """Per question template, answers sampled at temperature 1 (`mc.sampled_by_topic` / `oe.sampled_by_topic`):
    "sampled / blind" accuracy and the contrast share, one column pair per evaluated model; None when no
    result has them."""
    names_ = [n for n, r in evals.items() if r.get("oe.sampled_by_topic") or r.get("mc.sampled_by_topic")]
    if not names_:
        return None
    found = _templates([evals[name] for name in names_], "sampled_by_topic")
    rows = []
    for kind, topic in found:
        cells = [(evals[name].get(f"{kind}.sampled_by_topic") or {}).get(topic) for name in names_]
        n = next((c["n"] for c in cells if c is not None), 0)
        row = [f"{kind.upper()} {topic} ({n})"]
        for c in cells:
            row += ["n/a", "n/a"] if c is None else [f"{_pct(c['accuracy'])} / {_pct(c['blind'])}", _pct(c["contrast"])]
        rows.append(row)
    header = ["question (%)"]
    for name in names_:
        header += [f"{name}: sampled / blind", f"{name}: contrast"]
    return Table(header, rows)


def reward_rows(rewards: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Table:
    """Per stage and task: mean reward over the first and last 10% of logged steps (summary.json)."""
    rows = []
    for stage, tasks in rewards.items():
        for task, s in tasks.items():
            if s.get("first") is None:
                continue
            rows.append([names.stage(stage), names.task(task), f"{s['first']:.3f}", f"{s['last']:.3f}",
                         f"{s['change']:+.3f}"])
    return Table(["stage", "task", "mean reward, first 10% of steps", "last 10%", "change"], rows)


def reward_seeds_table(per_seed: Mapping[int, Mapping[str, Mapping[str, Mapping[str, Any]]]]) -> Table:
    """reward_rows over seeds: mean +/- std of first, last and change, and in how many seeds it rose."""
    order: list[tuple[str, str]] = []
    for rewards in per_seed.values():
        for stage, tasks in rewards.items():
            order += [(stage, t) for t, s in tasks.items() if s.get("first") is not None and (stage, t) not in order]
    rows = []
    for stage, task in order:
        runs = [per_seed[s][stage][task] for s in per_seed
                if (per_seed[s].get(stage) or {}).get(task, {}).get("first") is not None]
        cells = []
        for field in ("first", "last", "change"):
            mean, std = mean_std([r[field] for r in runs])
            cells.append(f"{mean:+.3f} ± {std:.3f}" if field == "change" else f"{mean:.3f} ± {std:.3f}")
        rose = sum(r["change"] > 0 for r in runs)
        rows.append([names.stage(stage), names.task(task), *cells, f"{rose} of {len(runs)}"])
    return Table(["stage", "task", "first 10% of steps", "last 10%", "change", "seeds where it rose"], rows)


# ------------------------------------------------------------------ Markdown text (for other reports)


def metrics_table(evals: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: held-out metrics per evaluated model, with counts, 95% intervals and the change."""
    return markdown_table(heldout_table(evals))


def topic_table(evals: Mapping[str, Mapping[str, Any]]) -> str | None:
    table = topic_rows(evals)
    return None if table is None else markdown_table(table)


def reward_table(rewards: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    return markdown_table(reward_rows(rewards))
