"""The report of a `corl reproduce` run folder (the paper's recipes): report.md and report.html with the
stages' rewards and every logged metric family, the evaluations with their counts and 95% intervals, the
checkpoints (relative to the folder) and the provenance. Like the demo's, it reads only the run folder's
files and the results it is given, so it can be rewritten after each part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import corl.report.names as names
from corl.report.demo import PROVENANCE_FILE, Report, final_checkpoint, read_json
from corl.report.document import (
    Bullets,
    Code,
    Details,
    Document,
    Figure,
    Heading,
    Image,
    Paragraph,
    Table,
    markdown_table,
    write_document,
)
from corl.report.plots import plot_stage_metrics
from corl.report.provenance import collect, describe
from corl.report.stats import wilson_interval
from corl.report.tables import reward_rows


def _rate_cell(value: Any, n: Any) -> str:
    if value is None:
        return "n/a"
    if not n:
        return f"{100 * value:.1f}"
    low, high = wilson_interval(round(value * n), int(n))
    return f"{100 * value:.1f} ({100 * low:.1f}–{100 * high:.1f})"


def evaluation_table(evals: Mapping[str, Mapping[str, Any]]) -> Table | None:
    """Scored evaluations (MC / OE benchmarks, the Shapes suite): one row per metric with its count and
    95% Wilson interval; None when no evaluation carries a score."""
    rows = []
    for name, result in evals.items():
        for key, count_key in (("accuracy", "n"), ("mc.accuracy", "mc.n"), ("oe.accuracy", "oe.n"),
                               ("t2i.overall", "t2i.n_images"), ("format_rate", None)):
            if result.get(key) is None:
                continue
            n = result.get(count_key) if count_key else (result.get("settings") or {}).get("n_rows")
            label = names.metric(key) if key != "accuracy" else "accuracy"
            rows.append([name, label, str(n or "?"), _rate_cell(result[key], n)])
    return Table(["evaluation", "metric (%)", "n", "score (95% interval)"], rows) if rows else None


def _image_dumps(evals: Mapping[str, Mapping[str, Any]], out: Path) -> list[str]:
    """Image benchmarks (GenEval / DPG / WISE) are scored by their official scorers, not here: say where
    the images are and how many."""
    items = []
    for name, result in evals.items():
        dump = result.get("images")  # corl eval --suite geneval / dpg / wise: where and how many
        if not isinstance(dump, dict) or "outdir" not in dump:
            continue
        folder = Path(dump["outdir"])
        shown = folder.relative_to(out).as_posix() if folder.is_relative_to(out) else str(folder)
        items.append(f"{name}: {dump.get('n_prompts', '?')} prompts x {dump.get('images_per_prompt', '?')} "
                     f"images under `{shown}`; score them with the benchmark's official scorer")
    return items


def _provenance(out: Path, stages: Sequence[str]) -> list:
    blocks: list = [Heading("Provenance")]
    records = read_json(out / PROVENANCE_FILE) if (out / PROVENANCE_FILE).is_file() else []
    if not records:
        records = [collect()]  # the process writing the report: the best that is known
    blocks.append(Bullets(describe(records[0])))
    for stage in stages:
        config = out / stage / "config.yaml"
        if config.is_file():
            blocks.append(Details(f"recipe of the {names.stage(stage)} stage after overrides: {stage}/config.yaml",
                                  [Code(config.read_text(encoding="utf-8"))]))
    return blocks


def write_pipeline_report(out: Path, title: str, stages: Sequence[str], evals: Mapping[str, Mapping[str, Any]],
                          *, overrides: Sequence[str] = (), extra_checkpoints: Mapping[str, Path] | None = None,
                          seconds: Mapping[str, float] | None = None) -> Report:
    """OUT/report.md and OUT/report.html of a pipeline of `stages` (each a `corl train` folder OUT/<stage>)
    and its evaluations (name -> results.json of `corl eval`). extra_checkpoints: other models the pipeline
    made (a merge), shown with the stages' final checkpoints."""
    doc = Document(title)
    finished = [s for s in stages if final_checkpoint(out / s) is not None]
    missing = [names.stage(s) for s in stages if s not in finished]
    doc.add(Paragraph(f"Stages: {names.stage_list(list(stages))}. Overrides applied to every stage: "
                      f"`{' '.join(overrides) or 'none'}`."))
    doc.add(Paragraph("**Status:** every stage finished." if not missing else
                      f"**Status: incomplete.** Not (yet) finished: {', '.join(missing)}."))
    doc.add(Heading("Evaluation"))
    table = evaluation_table(evals)
    dumps = _image_dumps(evals, out)
    if table is not None:
        doc.add(Paragraph("Scores in %, with n (questions) and the 95% Wilson interval."), table)
    if dumps:
        doc.add(Bullets(dumps))
    if table is None and not dumps:
        doc.add(Paragraph("None yet (ask for them with --geneval / --dpg / --wise / --benchmark)."))
    rewards = {}
    for stage in stages:
        summary = out / stage / "summary.json"
        if summary.is_file():
            rewards[stage] = read_json(summary).get("reward", {})
    if rewards:
        doc.add(Heading("Training rewards"),
                Paragraph("Mean total reward of each task over the first and the last 10% of each stage's logged "
                          "steps."), reward_rows(rewards))
    figures = []
    for stage in stages:
        metrics = out / stage / "metrics.jsonl"
        if metrics.is_file():
            figure = plot_stage_metrics(metrics, out / "plots" / f"stage-{stage}.png", f"{names.stage(stage)} stage")
            if figure is not None:
                figures.append(Figure(Image(figure, f"{names.stage(stage)} stage metrics")))
    if figures:
        doc.add(Heading("Training metrics per stage"),
                Paragraph("Every metric family the trainer logs, one axis each (thin: per step; thick: a moving "
                          "average)."), *figures)
    doc.add(*_provenance(out, stages))
    checkpoints = {names.stage(s): final_checkpoint(out / s) for s in finished}
    checkpoints.update(extra_checkpoints or {})
    items = [f"{label}: `{Path(p).relative_to(out).as_posix() if Path(p).is_relative_to(out) else p}`"
             for label, p in checkpoints.items() if p is not None]
    doc.add(Heading("Checkpoints and time"))
    if items:
        doc.add(Bullets(items))
    if seconds:
        doc.add(Paragraph("Seconds (this invocation): " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + "."))
    md, page = write_document(doc, out)
    summary = [markdown_table(reward_rows(rewards))] if rewards else []
    if table is not None:
        summary.insert(0, markdown_table(table))
    return Report(md, page, "\n\n".join(summary))
