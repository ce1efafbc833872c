"""The report of a `corl demo` run folder: report.md (renders in a Markdown viewer, images linked) and
report.html (one file, images inlined), made only from the files the run wrote, so it can be rewritten
after every stage and a killed run still has a report of what finished.

Run folder layout (written by corl.cli.demo, read here):

    OUT/run.json            the settings the run was made with (seeds, held-out rows, stages, overrides)
    OUT/provenance.json     one record per invocation: command, commit, versions, machine
    SEED/                   OUT itself for one seed, OUT/seed-N for each of several
      eval_{base,unified,final}.json   held-out results with per-row details (`corl eval` schema)
      grid/{name}/          the fixed prompt grid of each evaluated model (examples.generate_grid)
      failures/{name}/      failure examples of each evaluated model (examples.save_failures)
      curve_base.json       the base's point of the held-out curve (the in-training evaluation's settings)
      {stage}/              each stage's `corl train` folder (metrics.jsonl with eval/* rows, summary.json)
      timings.json          seconds per part, summed over the invocations
      plots/                figures drawn for the report
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corl.report.names as names
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
from corl.report.examples import load_failures, load_grid
from corl.report.provenance import describe
from corl.report.plots import plot_heldout_curve, plot_prompt_grid, plot_stage_metrics
from corl.report.stats import wilson_interval
from corl.report.tables import heldout_table, reward_rows, reward_seeds_table, sampled_rows, seeds_table, topic_rows

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
PROVENANCE_FILE = "provenance.json"
TIMINGS_FILE = "timings.json"
CURVE_BASE_FILE = "curve_base.json"
EVAL_NAMES: tuple[str, ...] = ("base", "unified", "final")


@dataclass
class Report:
    path: Path  # report.md
    html_path: Path
    summary_text: str  # the held-out table and the reward changes, for the terminal


def seed_folder(out: Path, seed: int, seeds: Sequence[int]) -> Path:
    """Where one seed's run lives: OUT itself for a single seed, OUT/seed-N for each of several."""
    return out if len(seeds) == 1 else out / f"seed-{seed}"


def evaluated_models(stages: Sequence[str]) -> list[tuple[str, str]]:
    """(file name, column label) of each evaluation of a demo with these stages, in order."""
    models = [("base", "base")]
    if "unified" in stages and len(stages) > 1:
        models.append(("unified", "after unified"))
    refined = [s for s in stages if s != "unified"]
    models.append(("final", "after refined" if refined else f"after {names.stage(stages[-1])}"))
    return models


def eval_file(folder: Path, name: str) -> Path:
    return folder / f"eval_{name}.json"


def grid_folder(folder: Path, name: str) -> Path:
    return folder / "grid" / name


def failures_folder(folder: Path, name: str) -> Path:
    return folder / "failures" / name


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is damaged (not JSON: {err}): delete it and run again to redo that part") from None


def _optional(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _shown(path: Path, report_dir: Path) -> str:
    """A path as a report names it: relative to the report's folder."""
    return Path(os.path.relpath(path, report_dir)).as_posix()


def final_checkpoint(stage_dir: Path) -> Path | None:
    """The final checkpoint a finished stage recorded, found by its name inside the stage folder: a run
    folder that was moved or copied still finds its own checkpoints."""
    summary = _optional(stage_dir / "summary.json")
    final = (summary or {}).get("final_checkpoint")
    if not final:
        return None
    found = stage_dir / Path(final).name
    return found if found.is_dir() else None


# ------------------------------------------------------------------------------------------ sections


def _intro(settings: Mapping[str, Any], evals: Mapping[str, Any]) -> Paragraph:
    stages = list(settings["stages"])
    refined = [names.stage(s).removeprefix("refined ") for s in stages if s != "unified"]
    if len(refined) > 1:
        what = f"the refined stages one after another ({', '.join(refined)})"
    else:
        what = f"the refined {refined[0]} stage" if refined else ""
    if "unified" in stages:
        what = f"the unified stage, then {what}" if what else "the unified stage"
    some = next((r for r in evals.values() if r is not None), None)
    settings_of_eval = (some or {}).get("settings", {})
    held_out = f"{settings['max_rows']} held-out rows"
    if some is not None:
        held_out += (f" ({some.get('mc.n', '?')} multiple-choice and {some.get('oe.n', '?')} open-ended questions "
                     f"answered greedily; {_count(settings_of_eval.get('images_per_prompt'), 'image')} per caption, "
                     f"CFG {settings_of_eval.get('cfg_weight', '?')})")
    overrides = " ".join(settings.get("overrides") or []) or "none"
    return Paragraph(f"CoRL in the Shapes world: the shipped Shapes base model, {what}; each stage is a "
                     f"`corl train` of `recipes/shapes-tiny/<stage>` starting from the previous stage's final "
                     f"checkpoint. Evaluated on {held_out}. Overrides applied to every stage: `{overrides}`.")


def _progress(folder: Path, settings: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(parts finished, parts not done) of one seed's run."""
    done, missing = [], []
    for stage in settings["stages"]:
        (done if final_checkpoint(folder / stage) else missing).append(f"{names.stage(stage)} stage")
    for name, label in evaluated_models(settings["stages"]):
        (done if eval_file(folder, name).is_file() else missing).append(f"evaluation {label}")
    return done, missing


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{'?' if n is None else n} {noun}s"


def _status(folder: Path, settings: Mapping[str, Any]) -> Paragraph:
    """Which parts finished: a report of a killed run says what it is missing."""
    done, missing = _progress(folder, settings)
    if not missing:
        return Paragraph("**Status:** finished (every stage and evaluation).")
    return Paragraph(f"**Status: incomplete.** Finished: {', '.join(done) or 'nothing yet'}. Not (yet) done: "
                     f"{', '.join(missing)}. Running the same command again continues from there.")


def _evals(folder: Path, stages: Sequence[str]) -> dict[str, Any]:
    return {label: _optional(eval_file(folder, name)) for name, label in evaluated_models(stages)}


def _heldout_section(evals: Mapping[str, Any]) -> list:
    done = {k: v for k, v in evals.items() if v is not None}
    if not done:
        return [Heading("Held-out results"), Paragraph("No evaluation has finished yet.")]
    blocks = [Heading("Held-out results"),
              Paragraph("Scores in %, with the 95% interval in parentheses: Wilson's for a pass rate. The "
                        "generation pass rate is the mean of the category rates (as GenEval's overall score); with "
                        "as many images in each category it equals the pooled rate and gets Wilson's interval, "
                        "otherwise a normal interval on adjusted rates. n: the images (generation) or questions "
                        "(understanding) a score is computed over. The intervals treat the images of one caption "
                        "as independent draws, which they are not quite, so generation intervals are a little "
                        "optimistic."),
              heldout_table(evals)]
    topics = topic_rows(done)
    if topics is not None:
        blocks += [Paragraph("Understanding accuracy per question template, MC: multiple choice, OE: open-ended "
                             "(questions in parentheses):"), topics]
    thinks = topic_rows(done, "think_match")
    if thinks is not None:
        blocks += [Paragraph("Think text per question template: the share of greedy answers with a <think> block "
                             "whose think text describes the image exactly as the Shapes base model was taught "
                             "(\"I see two red circles and a blue square.\"). RL rewards only the answer and its "
                             "format, so a falling share means the reasoning text drifts."), thinks]
    sampled = sampled_rows(done)
    if sampled is not None:
        k = next(r["settings"].get("answer_samples") for r in done.values() if (r.get("settings") or {}).get("answer_samples"))
        blocks += [Paragraph(f"What RL can elicit: {k} answers per question sampled at temperature 1, as a GRPO "
                             "group samples them. Sampled: their accuracy. Blind: the accuracy of answers drawn from "
                             "the samples of the template's other questions of the same form (color, shape and "
                             "number words masked; MC answers as the letters they name) whatever the image; "
                             "sampled near blind means the right samples are luck, not read from the image. "
                             "Contrast: the share of questions whose samples hold both a right and a wrong answer, "
                             "the groups with a reward difference to learn from."), sampled]
    return blocks


def _grid_section(folder: Path, stages: Sequence[str], plots: Path, report_dir: Path) -> list:
    columns, prompts, sources, seed = {}, [], [], None
    for name, label in evaluated_models(stages):
        grid = load_grid(grid_folder(folder, name))
        if grid is None:
            continue
        sources.append(grid_folder(folder, name) / "grid.json")
        prompts = prompts or grid["prompts"]
        seed = grid["seed"]
        columns[label] = {"images": [p["pil"] for p in grid["prompts"]], "passed": [p["passed"] for p in grid["prompts"]]}
    figure = plot_prompt_grid(prompts, columns, plots / "prompt_grid.png", sources)
    if figure is None:
        return []
    return [Heading("Fixed prompts, side by side"),
            Figure(Image(figure, "fixed prompt grid"),
                   f"One held-out caption per GenEval category, generated by each evaluated model with the same "
                   f"seed ({seed}), so differences come from training, not from the draw. Green frame: the "
                   f"Shapes analyzer passes the image; red: it fails. The images: "
                   f"`{_shown(folder / 'grid', report_dir)}/`.")]


def heldout_curve(folder: Path, stages: Sequence[str]) -> tuple[list[tuple[int, dict]], list[tuple[int, str]], list[Path]]:
    """The in-training held-out points of one seed over all stages: [(step counted over all stages,
    {metric: value})], the stage boundaries and the files they come from."""
    from corl.training.tracking import read_metrics

    points: list[tuple[int, dict]] = []
    sources = [folder / CURVE_BASE_FILE]
    base = _optional(folder / CURVE_BASE_FILE)
    if base:
        points.append((0, {k[5:]: v for k, v in base.items() if k.startswith("eval/")}))
    boundaries, offset = [], 0
    for stage in stages:
        path = folder / stage / "metrics.jsonl"
        if not path.is_file():
            break
        sources.append(path)
        header, rows = read_metrics(path, warn=False)
        boundaries.append((offset, names.stage(stage)))
        for row in rows:
            evals = {k[5:]: v for k, v in row.items() if k.startswith("eval/")}
            if evals:
                points.append((offset + int(row["step"]), evals))
        offset += int(header.get("total_steps") or (rows[-1]["step"] if rows else 0))
    return points, boundaries, sources


def _curve_caption(points: Sequence[tuple[int, dict]], settings: Mapping[str, Any]) -> str:
    first = points[0][1]
    parts = []
    for count_key, what in (("t2i.n_images", "image"), ("mc.n", "MC question"), ("oe.n", "OE question")):
        n = int(first.get(count_key) or 0)
        if n:
            low, high = wilson_interval(n / 2, n)
            parts.append(f"{_count(n, what)} (a 95% interval spans about ±{100 * (high - low) / 2:.0f} points)")
    return (f"Held-out score during training: {settings.get('curve_rows', '?')} held-out rows balanced over category "
            f"and question type (the same rows at every point), evaluated "
            f"{settings.get('curve_points', '?')} times per stage by the trainer (`train.eval_steps`; it draws "
            f"from its own seeded generators, so the trained weights are the same as without it). Each point: "
            f"{'; '.join(parts)}, so small moves are noise; the table above uses all {settings['max_rows']} rows. "
            f"Dotted lines: the start of each stage.")


def _curve_section(runs: Mapping[str, tuple], settings: Mapping[str, Any], path: Path) -> list:
    points = {label: run[0] for label, run in runs.items()}
    boundaries = next(iter(runs.values()))[1]
    sources = [s for run in runs.values() for s in run[2]]
    figure = plot_heldout_curve(points, boundaries, path, sources)
    firsts = [p for p in points.values() if p]
    if figure is None or not firsts:
        return []
    return [Heading("Held-out curve during training"), Figure(Image(figure, "held-out curve"),
                                                              _curve_caption(firsts[0], settings))]


def _rewards(folder: Path, stages: Sequence[str]) -> dict[str, Any]:
    out = {}
    for stage in stages:
        summary = _optional(folder / stage / "summary.json")
        if summary:
            out[stage] = summary.get("reward", {})
    return out


def _stage_plots(folder: Path, stages: Sequence[str], plots: Path) -> list:
    blocks = []
    for stage in stages:
        metrics = folder / stage / "metrics.jsonl"
        if not metrics.is_file():
            continue
        figure = plot_stage_metrics(metrics, plots / f"stage-{stage}.png", f"{names.stage(stage)} stage")
        if figure is not None:
            blocks.append(Figure(Image(figure, f"{names.stage(stage)} stage metrics")))
    if not blocks:
        return []
    return [Heading("Training metrics per stage"),
            Paragraph("Every metric family the trainer logs, one axis each (thin: per step; thick: a moving "
                      "average). Rewards per component with their weighted total; seconds per step split into "
                      "rollout, rewards, scoring (old / reference log-probs) and update."), *blocks]


def _failures_section(folder: Path, stages: Sequence[str]) -> list:
    latest = None
    for name, label in evaluated_models(stages):
        failures = load_failures(failures_folder(folder, name))
        if failures is not None:
            latest = (name, label, failures)
    if latest is None:
        return []
    name, label, failures = latest
    where = failures_folder(folder, name)
    blocks: list = [Heading(f"Failure examples ({label})")]
    counts = dict(sorted(failures["generation_counts"].items(),
                         key=lambda item: list(names.CATEGORIES).index(item[0]) if item[0] in names.CATEGORIES else 99))
    if counts:
        blocks.append(Paragraph("Generation, images failed per category: " + "; ".join(
            f"{names.category(c)} {bad} of {n}" for c, (bad, n) in counts.items()) + "."))
    order = list(names.CATEGORIES)
    failures["generation"].sort(key=lambda g: order.index(g["category"]) if g["category"] in order else 99)
    failures["understanding"].sort(key=lambda u: _topic_order(f"{u['question_type']} {u['topic']}"))
    if failures["generation"]:
        blocks.append(Table(["category", "caption", "a failed image", "what the analyzer found", "images passed"],
                            [[names.category(g["category"]), g["caption"], Image(where / g["image"], "failed image"),
                              g["reason"], g["passed"]] for g in failures["generation"]]))
    counts = dict(sorted(failures["understanding_counts"].items(), key=lambda item: _topic_order(item[0])))
    if counts:
        blocks.append(Paragraph("Understanding, wrong answers per question type and template: " + "; ".join(
            f"{names.QUESTION_TYPES.get(k.split()[0], k.split()[0])} {k.split()[1]} {bad} of {n}"
            for k, (bad, n) in counts.items()) + "."))
    if failures["understanding"]:
        blocks.append(Table(["question", "image", "the question", "the model's answer", "expected"],
                            [[f"{names.QUESTION_TYPES.get(u['question_type'], u['question_type'])}, {u['topic']}",
                              Image(where / u["image"], "question image"), u["question"].replace("\n", " / "),
                              _clip(u["answer"]), u["expected"]] for u in failures["understanding"]]))
    return blocks


def _topic_order(key: str) -> tuple[str, int]:
    """"mc color" -> MC before OE, then the world's question-template order."""
    from corl.shapes.questions import QUESTION_TOPICS

    kind, _, topic = key.partition(" ")
    return kind, QUESTION_TOPICS.index(topic) if topic in QUESTION_TOPICS else len(QUESTION_TOPICS)


def _clip(text: str, limit: int = 240) -> str:
    """A generated answer as a table cell: one line, and a runaway one cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " … (cut)"


def _provenance_section(out: Path, folders: Mapping[int, Path], settings: Mapping[str, Any],
                        report_dir: Path) -> list:
    records = _optional(out / PROVENANCE_FILE) or []
    blocks: list = [Heading("Provenance")]
    if records:
        blocks.append(Bullets([
            *describe(records[0]),
            f"seeds: {', '.join(str(s) for s in settings['seeds'])}; held-out rows {settings['max_rows']}, "
            f"{_count(settings['images_per_prompt'], 'image')} per caption",
        ]))
        if len(records) > 1:
            blocks.append(Paragraph(f"Continued by {len(records) - 1} later invocation(s) with the same settings: " +
                                    "; ".join(f"`{r['command']}` ({r['started']}, commit "
                                              f"`{r['commit'] or 'n/a'}`)" for r in records[1:])))
    for seed, folder in folders.items():
        for stage in settings["stages"]:
            config = folder / stage / "config.yaml"
            if config.is_file():
                title = f"recipe of the {names.stage(stage)} stage after overrides"
                title += f" (seed {seed})" if len(folders) > 1 else ""
                blocks.append(Details(f"{title}: {_shown(config, report_dir)}",
                                      [Code(config.read_text(encoding="utf-8"))]))
    return blocks


def _checkpoints_and_time(folder: Path, stages: Sequence[str]) -> list:
    items = []
    for stage in stages:
        found = final_checkpoint(folder / stage)
        if found is not None:
            items.append(f"{names.stage(stage)}: `{_shown(found, folder)}`")
    timings = _optional(folder / TIMINGS_FILE) or {}
    runs = int(timings.pop("runs", 1))
    labels = {"total": "total"}
    for name, label in evaluated_models(stages):
        labels[f"eval_{name}"] = f"evaluation {label}"
    for stage in stages:
        labels[f"train_{stage}"] = f"{names.stage(stage)} stage"
    text = ", ".join(f"{labels.get(k, k)} {v:.0f} s" for k, v in timings.items())
    if runs > 1:
        text += f" (summed over the {runs} invocations that built this folder)"
    blocks: list = [Heading("Checkpoints and time")]
    if items:
        blocks.append(Bullets(items))
    if text:
        blocks.append(Paragraph(f"Seconds: {text}."))
    return blocks


# --------------------------------------------------------------------------------------- documents


def seed_report(out: Path, folder: Path, settings: Mapping[str, Any], seed: int) -> tuple[Document, dict[str, Any]]:
    """The whole report of one seed's folder (and its held-out results by column)."""
    stages = settings["stages"]
    plots = folder / "plots"
    evals = _evals(folder, stages)
    title = "corl demo report" + (f", seed {seed}" if len(settings["seeds"]) > 1 else "")
    doc = Document(title)
    doc.add(_intro(settings, evals), _status(folder, settings), *_heldout_section(evals),
            *_grid_section(folder, stages, plots, folder))
    doc.add(*_curve_section({f"seed {seed}": heldout_curve(folder, stages)}, settings, plots / "heldout_curve.png"))
    rewards = _rewards(folder, stages)
    if rewards:
        doc.add(Heading("Training rewards"),
                Paragraph("Mean total reward of each task over the first and the last 10% of the logged steps "
                          "of each stage (the unified stage also logs the joint reward it optimizes)."),
                reward_rows(rewards))
    doc.add(*_stage_plots(folder, stages, plots), *_failures_section(folder, stages),
            *_provenance_section(out, {seed: folder}, settings, folder),
            *_checkpoints_and_time(folder, stages))
    return doc, evals


def seeds_report(out: Path, settings: Mapping[str, Any]) -> Document:
    """The report at the top of a multi-seed run: mean +/- std over seeds, every seed's held-out curve,
    and the first seed's pictures; each seed's own report is linked."""
    seeds, stages = list(settings["seeds"]), settings["stages"]
    folders = {s: seed_folder(out, s, seeds) for s in seeds}
    labels = [label for _, label in evaluated_models(stages)]
    per_seed = {s: _evals(folders[s], stages) for s in seeds}
    doc = Document(f"corl demo report, seeds {', '.join(str(s) for s in seeds)}")
    doc.add(_intro(settings, next(iter(per_seed.values()))))
    lines = []
    for seed, folder in folders.items():
        done, missing = _progress(folder, settings)
        state = "finished" if not missing else f"incomplete, not (yet) done: {', '.join(missing)}"
        lines.append(f"seed {seed}: [{folder.name}/report.md]({folder.name}/report.md) "
                     f"([html]({folder.name}/report.html)), {state}")
    doc.add(Paragraph("**Status and each seed's own report:**"), Bullets(lines))
    doc.add(Heading("Held-out results, mean ± std over seeds"),
            Paragraph("Scores in %: mean ± sample standard deviation over the seeds that finished that evaluation; "
                      "the change column lists each seed's own change. Each seed's report gives its counts and "
                      "95% intervals."),
            seeds_table(per_seed, labels))
    rewards = {s: _rewards(folders[s], stages) for s in seeds}
    if any(rewards.values()):
        doc.add(Heading("Training rewards, over seeds"),
                Paragraph("Mean total reward of each task over the first and last 10% of each stage's logged steps."),
                reward_seeds_table(rewards))
    first = folders[seeds[0]]
    doc.add(*_curve_section({f"seed {s}": heldout_curve(folders[s], stages) for s in seeds}, settings,
                            out / "plots" / "heldout_curve.png"))
    detail = [*_grid_section(first, stages, first / "plots", out), *_stage_plots(first, stages, first / "plots"),
              *_failures_section(first, stages)]
    if detail:
        doc.add(Heading(f"Seed {seeds[0]} in detail"),
                Paragraph(f"The pictures of seed {seeds[0]}; the other seeds' are in their own reports."),
                *[_demote(b) for b in detail])
    doc.add(*_provenance_section(out, folders, settings, out))
    return doc


def _demote(block: Any) -> Any:
    return Heading(block.text, block.level + 1) if isinstance(block, Heading) else block


def write_demo_report(out: Path) -> Report:
    """OUT/report.md and OUT/report.html from what the run folder holds (and each seed's own report in
    its folder when there are several seeds)."""
    settings = read_json(out / RUN_FILE)
    seeds = list(settings["seeds"])
    summary = []
    for seed in seeds:
        folder = seed_folder(out, seed, seeds)
        doc, evals = seed_report(out, folder, settings, seed)
        write_document(doc, folder)
        if any(v is not None for v in evals.values()):
            summary.append((f"seed {seed}:\n" if len(seeds) > 1 else "") + markdown_table(heldout_table(evals)))
    if len(seeds) > 1:
        write_document(seeds_report(out, settings), out)
        per_seed = {s: _evals(seed_folder(out, s, seeds), settings["stages"]) for s in seeds}
        labels = [label for _, label in evaluated_models(settings["stages"])]
        summary.append("mean ± std over seeds:\n" + markdown_table(seeds_table(per_seed, labels)))
    return Report(out / "report.md", out / "report.html", "\n\n".join(summary[-1:]))
