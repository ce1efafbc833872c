"""The pilot study's report (`corl pilot`): tables over seeds and a plot, from the arms' evaluations.

`results` maps arm -> one evaluation per seed (the dicts `corl eval --suite shapes` writes), in seed order.
Written as OUT/pilot.md, pilot.html, pilot.json and pilot.png, rewritten after every arm.

Tables:
- scores: mean ± std over seeds per arm (generation, MC, OE, format);
- change from the base: each seed's arm minus the same seed's base (the base is evaluated on the same rows
  with the same seed), mean ± std of that change; a change is marked when its mean exceeds its std, the
  pilot's criterion for "improves" (a single seed has no std and is never marked);
- generation per GenEval category, and open-ended accuracy per question template, mean ± std.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corl.report import names
from corl.report.document import Table
from corl.report.provenance import describe
from corl.shapes.questions import QUESTION_TOPICS
from corl.shapes.scene import CATEGORIES

SCORES: tuple[tuple[str, str], ...] = (("t2i.overall", "generation"), ("mc.accuracy", "MC"),
                                       ("oe.accuracy", "OE"), ("format_rate", "format"))
CATEGORY_SCORES: tuple[tuple[str, str], ...] = tuple((f"t2i.{c}", names.category(c)) for c in CATEGORIES)
OE_TOPIC_SCORES: tuple[tuple[str, str], ...] = tuple((f"oe.by_topic.{t}", t) for t in QUESTION_TOPICS)
BASE_ARM = "base"


def score_of(result: dict[str, Any], key: str) -> float | None:
    """A score of one evaluation; `oe.by_topic.<topic>` reaches into the per-template accuracies."""
    if key.startswith(("oe.by_topic.", "mc.by_topic.")):
        fmt, _, topic = key.split(".", 2)
        entry = (result.get(f"{fmt}.by_topic") or {}).get(topic)
        return None if entry is None else entry.get("accuracy")
    return result.get(key)


def mean_std(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
            "n": len(values)}


def summarize(results: dict[str, list[dict[str, Any]]],
              keys: Sequence[str] = tuple(k for k, _ in SCORES)) -> dict[str, dict[str, dict[str, float | None]]]:
    """arm -> score -> {mean, std, n} over seeds."""
    return {arm: {key: mean_std([v for r in runs if (v := score_of(r, key)) is not None]) for key in keys}
            for arm, runs in results.items()}


def changes_from_base(results: dict[str, list[dict[str, Any]]],
                      keys: Sequence[str] = tuple(k for k, _ in SCORES)) -> dict[str, dict[str, dict]]:
    """arm -> score -> {mean, std, n} of (arm - base) paired by seed (module docstring); {} without a base."""
    base = results.get(BASE_ARM) or []
    if not base:
        return {}
    table: dict[str, dict[str, dict]] = {}
    for arm, runs in results.items():
        if arm == BASE_ARM:
            continue
        table[arm] = {}
        for key in keys:
            pairs = [(score_of(r, key), score_of(b, key)) for r, b in zip(runs, base)]
            table[arm][key] = mean_std([a - b for a, b in pairs if a is not None and b is not None])
    return table


def _cell(s: dict[str, float | None], signed: bool = False) -> str:
    if s["mean"] is None:
        return "n/a"
    text = f"{100 * s['mean']:+.1f}" if signed else f"{100 * s['mean']:.1f}"
    return f"{text} ± {100 * s['std']:.1f}"


def score_table(table: dict, scores: Sequence[tuple[str, str]] = SCORES) -> Table:
    """One row per arm, one column per score: mean ± std over seeds."""
    rows = [[arm, *(_cell(s[key]) for key, _ in scores)] for arm, s in table.items()]
    return Table(["arm", *(label for _, label in scores)], rows)


def change_table(changes: dict, scores: Sequence[tuple[str, str]] = SCORES) -> Table:
    """One row per arm: mean ± std of the change from the base, ✓ where the mean exceeds the std."""
    def cell(s: dict) -> str:
        marked = s["mean"] is not None and s["n"] > 1 and s["mean"] > s["std"]
        return _cell(s, signed=True) + (" ✓" if marked else "")

    rows = [[arm, *(cell(s[key]) for key, _ in scores)] for arm, s in changes.items()]
    return Table(["arm", *(label for _, label in scores)], rows)


def budget_text(seeds: list[int], steps: int) -> str:
    return (f"Seeds {', '.join(str(s) for s in seeds)}; budget: unified {steps} steps = single-task arms "
            f"{2 * steps} steps (equal sampled completions). Scores in % on the held-out split, mean ± std over "
            "seeds.")


def plot_pilot(table: dict, path: Path) -> Path:
    """Generation score against understanding score (mean of MC and OE), one point per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A legend, not labels beside the points: arms with close scores would print their names over each other.
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    markers = "osD^vP*Xhp<>"
    for i, (arm, scores) in enumerate(table.items()):
        gen = scores["t2i.overall"]
        und = [scores[k]["mean"] for k in ("mc.accuracy", "oe.accuracy") if scores[k]["mean"] is not None]
        if gen["mean"] is None or not und:
            continue
        x, y = 100 * sum(und) / len(und), 100 * gen["mean"]
        ax.errorbar(x, y, yerr=100 * (gen["std"] or 0.0), fmt=markers[i % len(markers)], capsize=3, label=arm,
                    color=f"C{i % 10}", markersize=7)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.set_xlabel("understanding: mean of MC and OE accuracy (%)")
    ax.set_ylabel("generation pass rate (%)")
    ax.grid(alpha=0.3)
    ax.set_title("pilot study (Shapes world): mean over seeds, bars ± std of generation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_pilot_report(out: Path, settings: dict[str, Any], results: dict[str, list[dict[str, Any]]]) -> str:
    """OUT/pilot.md, pilot.html, pilot.json and pilot.png from the arms evaluated so far; returns the
    main table as Markdown. settings: the pilot's run.json record (seeds, steps, arms, max_rows,
    images_per_prompt, overrides)."""
    from corl.eval.grading import write_json_atomic
    from corl.report.demo import PROVENANCE_FILE, read_json
    from corl.report.document import (
        Bullets,
        Document,
        Figure,
        Heading,
        Image,
        Paragraph,
        markdown_table,
        write_document,
    )

    seeds, steps = list(settings["seeds"]), settings["steps"]
    done = {arm: runs for arm, runs in results.items() if runs}
    table = summarize(done)
    changes = changes_from_base(done)
    plot = plot_pilot(table, out / "pilot.png")
    write_json_atomic({"seeds": seeds, "steps": steps, "table": table, "changes_from_base": changes,
                       "runs": results}, out / "pilot.json")
    missing = [f"{arm} ({len(seeds) - len(results[arm])} of {len(seeds)} seeds)"
               for arm in settings["arms"] if len(results[arm]) < len(seeds)]
    doc = Document("Pilot study")
    n_images = settings["images_per_prompt"]
    doc.add(Paragraph(f"Arms: {', '.join(settings['arms'])}; {settings['max_rows']} held-out rows, {n_images} "
                      f"image{'s' if n_images != 1 else ''} per caption; overrides: "
                      f"`{' '.join(settings['overrides']) or 'none'}`."))
    if missing:
        doc.add(Paragraph(f"**Status: incomplete.** Not (yet) evaluated: {', '.join(missing)}."))
    doc.add(Paragraph(budget_text(seeds, steps)), score_table(table), Figure(Image(plot, "pilot")))
    if changes:
        doc.add(Heading("Change from the base"),
                Paragraph("Each seed's arm minus the same seed's base, in points, mean ± std over seeds; ✓ where "
                          "the mean change exceeds its std."), change_table(changes))
    doc.add(Heading("Generation per category"), score_table(summarize(done, [k for k, _ in CATEGORY_SCORES]),
                                                             CATEGORY_SCORES))
    if changes:
        doc.add(Paragraph("Change from the base per category:"),
                change_table(changes_from_base(done, [k for k, _ in CATEGORY_SCORES]), CATEGORY_SCORES))
    doc.add(Heading("Open-ended accuracy per question template"),
            score_table(summarize(done, [k for k, _ in OE_TOPIC_SCORES]), OE_TOPIC_SCORES))
    records = read_json(out / PROVENANCE_FILE) if (out / PROVENANCE_FILE).is_file() else []
    if records:
        doc.add(Heading("Provenance"), Bullets(describe(records[0])))
    write_document(doc, out, stem="pilot")
    return budget_text(seeds, steps) + "\n\n" + markdown_table(score_table(table)) + (
        "\n\nChange from the base:\n\n" + markdown_table(change_table(changes)) if changes else "")
