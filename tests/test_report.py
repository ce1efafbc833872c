"""corl.report: the numbers a person reads (counts, 95% intervals, mean +/- std over seeds) and the demo
report built from a run folder's files: every section, images that exist, a killed run, several seeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from corl.report import metrics_table, topic_table, wilson_interval
from corl.report.stats import mean_of_rates_interval
from corl.report.tables import count_of, heldout_table, interval_of, seeds_table


def _result(oe_exists: float = 0.25, with_topics: bool = True) -> dict:
    result = {"t2i.overall": 0.5, "t2i.counting": 0.25, "mc.accuracy": 0.4, "oe.accuracy": 0.6, "format_rate": 1.0}
    if with_topics:
        result["oe.by_topic"] = {"exists": {"accuracy": oe_exists, "n": 28}, "count": {"accuracy": 0.5, "n": 20}}
        result["mc.by_topic"] = {"color": {"accuracy": 0.75, "n": 12}}
    return result


# ------------------------------------------------------------------------------------- statistics


def test_wilson_interval_matches_the_hand_computed_numbers():
    # 8 of 10, z = 1.959964: center (0.8 + z^2/20) / (1 + z^2/10) = 0.716738,
    # half z / (1 + z^2/10) * sqrt(0.016 + z^2/400) = 0.226580
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.490159, abs=1e-5) and high == pytest.approx(0.943318, abs=1e-5)
    # 0 of 10: the interval does not collapse to a point (Wald's would be [0, 0])
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.277533, abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_mean_of_rates_interval():
    # equal counts: the mean of the rates is the pooled rate, and its interval Wilson's
    assert mean_of_rates_interval([2, 6], [10, 10]) == pytest.approx(wilson_interval(8, 20))
    # unequal counts: Agresti-Coull adjusted rates p = (k + z^2/2) / (n + z^2), by hand:
    # p1 = (1 + 1.920730) / (4 + 3.841459) = 0.372473, p2 = (9 + 1.920730) / (10 + 3.841459) = 0.788985
    # half = z * sqrt(0.233737 / 7.841459 + 0.166488 / 13.841459) / 2 = z * sqrt(0.041836) / 2 = 0.200444
    low, high = mean_of_rates_interval([1, 9], [4, 10])
    assert low == pytest.approx(0.580729 - 0.200444, abs=1e-5) and high == pytest.approx(0.580729 + 0.200444, abs=1e-5)


# ----------------------------------------------------------------------------------------- tables


def _with_details(passed: dict[str, list[bool]], answers: list[bool | None]) -> dict:
    """A Shapes-suite result whose numbers are computed from per-row details, as evaluate_shapes does."""
    details = [{"index": i, "prompt": f"caption {i}", "category": cat, "t2i_passed": [ok], "t2i_reasons": ["r"],
                "question": "q", "question_type": "mc", "topic": "color", "solution": "<answer>A</answer>",
                "completion": "c", "extracted": "A", "correct": None, "formatted": True}
               for i, (cat, ok) in enumerate((c, ok) for c, oks in passed.items() for ok in oks)]
    for row, correct in zip(details, answers):
        row["correct"] = correct
    rates = {c: sum(v) / len(v) for c, v in passed.items()}
    mc = [a for a in answers if a is not None]
    return {"t2i.overall": sum(rates.values()) / len(rates), **{f"t2i.{c}": r for c, r in rates.items()},
            "t2i.n_images": sum(len(v) for v in passed.values()), "mc.accuracy": sum(mc) / len(mc), "mc.n": len(mc),
            "oe.accuracy": None, "oe.n": 0, "format_rate": 1.0, "details": details,
            "settings": {"n_rows": len(details), "images_per_prompt": 1, "cfg_weight": 5.0, "seed": 0}}


def test_heldout_table_gives_counts_intervals_and_the_change():
    base = _with_details({"counting": [True, False, False, False], "colors": [True, True, False, False]},
                         [True, False, True, False, None, True, False, False])
    final = _with_details({"counting": [True, True, False, False], "colors": [True, True, True, True]},
                          [True, True, True, False, None, True, True, True])
    assert count_of(base, "t2i.counting") == 4 and count_of(base, "mc.accuracy") == 7
    assert count_of(base, "format_rate") == 8 and count_of(base, "t2i.overall") == 8
    # generation: categories of 4 images each, so the interval of the mean is the pooled Wilson (3 of 8)
    assert interval_of(base, "t2i.overall") == pytest.approx(wilson_interval(3, 8))
    table = heldout_table({"base": base, "after refined": final})
    assert table.header == ["metric (%)", "n", "base", "after refined", "change (base → after refined)"]
    rows = {row[0]: row for row in table.rows}
    low, high = wilson_interval(3, 7)
    assert rows["multiple-choice accuracy"] == ["multiple-choice accuracy", "7",
                                                f"42.9 ({100 * low:.1f}–{100 * high:.1f})",
                                                rows["multiple-choice accuracy"][3], "+42.9"]
    assert rows["generation: colors"][1] == "4" and rows["generation: colors"][4] == "+50.0"
    assert rows["open-ended accuracy"][2:] == ["n/a", "n/a", "n/a"]
    assert "t2i." not in " ".join(str(c) for row in table.rows for c in row)  # readable names only


def test_heldout_table_shows_accuracy_on_questions_not_trained_on_when_a_result_has_it():
    base = {**_result(), "oe.n": 150, "oe.accuracy_unseen": 0.62, "oe.n_unseen": 141}
    final = {**_result(), "oe.accuracy": 0.7, "oe.n": 150, "oe.accuracy_unseen": 0.68, "oe.n_unseen": 141}
    assert count_of(final, "oe.accuracy_unseen") == 141
    rows = {row[0]: row for row in heldout_table({"base": base, "final": final}).rows}
    unseen = rows["open-ended accuracy, questions not trained on"]
    low, high = wilson_interval(round(0.68 * 141), 141)
    assert unseen[1] == "141" and unseen[3] == f"68.0 ({100 * low:.1f}–{100 * high:.1f})" and unseen[4] == "+6.0"
    # only the keys some result has get a row
    assert "multiple-choice accuracy, questions not trained on" not in rows
    assert not any("not trained on" in row[0] for row in heldout_table({"base": _result()}).rows)


def test_heldout_table_of_a_model_not_evaluated_yet():
    table = heldout_table({"base": _result(), "after unified": None, "after refined": None})
    row = next(r for r in table.rows if r[0] == "generation pass rate")
    assert row[3:] == ["n/a", "n/a", "n/a"]


def test_seeds_table_gives_mean_std_and_each_seeds_change():
    per_seed = {0: {"base": {"t2i.overall": 0.4}, "final": {"t2i.overall": 0.6}},
                1: {"base": {"t2i.overall": 0.5}, "final": {"t2i.overall": 0.8}}}
    table = seeds_table(per_seed, ["base", "final"])
    row = next(r for r in table.rows if r[0] == "generation pass rate")
    # base 40, 50: mean 45, sample std 7.07; change +20, +30: mean +25, std 7.07
    assert row[2:] == ["45.0 ± 7.1", "70.0 ± 14.1", "+25.0 ± 7.1 (+20.0, +30.0)"]
    # a seed that did not finish is said, not averaged in silently
    per_seed[1]["final"] = None
    row = next(r for r in seeds_table(per_seed, ["base", "final"]).rows if r[0] == "generation pass rate")
    assert row[3] == "60.0 (1 of 2 seeds)"


def test_topic_table_has_a_row_per_format_and_topic_with_the_change():
    lines = topic_table({"base": _result(0.25), "final": _result(0.5)}).splitlines()
    assert lines[0] == "| question (%) | base | final | change (base → final) |"
    assert lines[2:] == [
        "| MC color (12) | 75.0 | 75.0 | +0.0 |",
        "| OE exists (28) | 25.0 | 50.0 | +25.0 |",
        "| OE count (20) | 50.0 | 50.0 | +0.0 |",
    ]


def test_topic_table_is_none_without_topics_and_tolerates_a_missing_one():
    assert topic_table({"base": _result(0.1, with_topics=False)}) is None
    table = topic_table({"base": _result(0.1, with_topics=False), "final": _result(0.5)})
    assert "| OE exists (28) | n/a | 50.0 | n/a |" in table.splitlines()


def test_think_rows_tabulate_the_think_match_of_the_templates_that_have_one():
    from corl.report.document import markdown_table
    from corl.report.tables import topic_rows

    base, final = _result(0.25), _result(0.5)
    assert topic_rows({"base": base, "final": final}, "think_match") is None  # answers without think texts
    base["oe.by_topic"]["exists"]["think_match"] = 0.5
    final["oe.by_topic"]["exists"]["think_match"] = 0.125
    lines = markdown_table(topic_rows({"base": base, "final": final}, "think_match")).splitlines()
    assert lines[2:] == ["| OE exists (28) | 50.0 | 12.5 | -37.5 |"]


def test_metrics_table_lists_headline_metrics_then_categories_by_readable_name():
    lines = metrics_table({"base": _result(), "final": _result()}).splitlines()
    assert lines[2].startswith("| generation pass rate |") and lines[2].endswith("| +0.0 |")
    assert lines[-1].startswith("| generation: counting |")


# ------------------------------------------------------------------------------------ plots


def test_metric_families_put_each_family_on_its_own_axis_with_readable_names():
    from corl.report.plots import metric_families

    rows = [{"step": s, "epoch": 0.1, "reward/t2i/mean": 1.0, "rewards/t2i/tim/mean": 0.5,
             "rewards/t2i/cycle_text/mean": 0.5, "rewards/t2i/tim/std": 0.1, "rewards/t2i/tim/failed": 0.0,
             "kl": 0.01, "kl/t2i": 0.01, "entropy/t2i": 2.0, "clip_ratio/low_mean/t2i": 0.0, "grad_norm": 1.0,
             "frac_reward_zero_std": 0.2, "frac_reward_zero_std/t2i": 0.2, "time/image_rollout": 3.0,
             "time/rewards": 0.3, "time/logps": 0.1, "time/update": 2.0, "time/step": 5.5,
             "eval/t2i.overall": 0.5, "some_new/metric": 3.0, "attrib/t2i_share": 0.3, "attrib/mm2t_share": 0.7,
             "attrib/corr_t2i_adv": 0.5} for s in (1, 2)]
    families = metric_families(rows)
    assert set(families["reward per component: generation"]) == {"total (weighted sum)", "text-image matching",
                                                                  "cycle, textual half"}
    # one task: the all-tasks series repeats it and is left out
    assert list(families["KL to the reference"]) == ["generation"]
    assert list(families["groups with zero reward spread (fraction)"]) == ["generation"]
    assert set(families["seconds per step, by phase"]) == {"image rollout", "rewards", "update", "step",
                                                           "scoring (old / reference log-probs)"}
    assert "some new" in families  # a metric the trainer adds later still gets an axis
    assert not any(k.startswith("eval") for k in families)  # the held-out curve has its own figure
    assert families["gradient norm"] == {"all tasks": [(1, 1.0), (2, 1.0)]}
    assert set(families["each task's share of the joint reward's spread"]) == {"generation", "understanding"}
    assert list(families["correlation of a task's reward with its tokens' advantage"]) == ["generation"]


def _stage_metrics(run_dir, text: str) -> None:
    (run_dir / "unified").mkdir(parents=True)
    (run_dir / "unified" / "metrics.jsonl").write_text(text)


def test_reward_curves_skip_a_torn_last_line_with_a_warning(tmp_path, caplog):
    """A stage killed (or out of disk space) mid-write leaves a cut-off last row: the plot is drawn from
    the whole rows."""
    from corl.report import plot_reward_curves

    rows = "".join(json.dumps({"step": s, "reward/t2i/mean": s / 10}) + "\n" for s in (1, 2, 3))
    _stage_metrics(tmp_path, '{"header": {}}\n' + rows + '{"step": 4, "reward/t2i/me')
    with caplog.at_level("WARNING"):
        path = plot_reward_curves(tmp_path, ["unified"], tmp_path / "plots" / "curves.png")
    assert path is not None and path.is_file()
    assert f"{tmp_path / 'unified' / 'metrics.jsonl'}: dropping its last line 5" in caplog.text


def test_reward_curves_of_a_damaged_metrics_file_name_the_line(tmp_path):
    from corl.report import plot_reward_curves

    _stage_metrics(tmp_path, '{"header": {}}\n{"step": 1, "rew\n{"step": 2, "reward/t2i/mean": 0.5}\n')
    with pytest.raises(ValueError, match=f"{tmp_path / 'unified' / 'metrics.jsonl'}: line 2 is not a JSON object"):
        plot_reward_curves(tmp_path, ["unified"], tmp_path / "plots" / "curves.png")


# ------------------------------------------------------------------------------- the demo report

SETTINGS = {"command": "demo", "seeds": [0], "max_rows": 8, "images_per_prompt": 1, "stages": ["unified", "mc"],
            "overrides": ["train.max_steps=4"], "curve_rows": 4, "curve_points": 2}


def _png(path: Path, color: tuple[int, int, int] = (200, 40, 40)) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path.name


def _fake_evaluation(folder: Path, name: str, shift: float) -> None:
    """What the demo writes for one evaluated model: results with details, failures and a grid."""
    from corl.report.demo import eval_file, failures_folder, grid_folder

    result = _with_details({"counting": [False, shift > 0, False, True], "colors": [True, shift > 0, True, False]},
                           [True, False, shift > 0, False, True, None, True, False])
    result["mc.by_topic"] = {"color": {"accuracy": 4 / 7, "n": 7, "think_match": 0.5 + shift}}
    eval_file(folder, name).write_text(json.dumps(result))
    where = failures_folder(folder, name)
    failures = {"generation": [{"category": "counting", "caption": "two circles", "image": _png(where / "gen-0.png"),
                                "reason": "expected exactly 2 circle, found 1", "passed": "0/1"}],
                "understanding": [{"question_type": "mc", "topic": "color", "question": "What color?\nA. red\nB. blue",
                                   "answer": "<think>x</think><answer>B</answer>", "extracted": "B",
                                   "expected": "A. red", "image": _png(where / "und-0.png")}],
                "generation_counts": {"counting": [3, 4]}, "understanding_counts": {"mc color": [4, 7]}}
    (where / "failures.json").write_text(json.dumps(failures))
    grid = grid_folder(folder, name)
    prompts = [{"caption": c, "category": cat, "row": i, "images": [_png(grid / f"{i}-{cat}-0.png", (40, 40, 200))],
                "passed": [shift > 0], "reasons": ["r"]} for i, (c, cat) in enumerate([("a circle", "single_object"),
                                                                                      ("two circles", "counting")])]
    (grid / "grid.json").write_text(json.dumps({"seed": 0, "images_per_prompt": 1, "cfg_weight": 5.0,
                                                "prompts": prompts}))


def _fake_stage(folder: Path, stage: str, steps: int = 4) -> None:
    stage_dir = folder / stage
    (stage_dir / f"checkpoint-{steps}").mkdir(parents=True)
    rows = [{"header": {"stage": stage, "total_steps": steps}}]
    for s in range(1, steps + 1):
        row = {"step": s, "reward/mm2t/mean": 0.5 + s / 10, "rewards/mm2t/accuracy/mean": s / 10, "kl": 0.01 * s,
               "entropy/mm2t": 1.0, "grad_norm": 0.5, "time/text_rollout": 1.0, "time/update": 0.5, "time/step": 1.6}
        if s % 2 == 0:
            row.update({"eval/t2i.overall": 0.3, "eval/mc.accuracy": 0.4 + s / 20, "eval/oe.accuracy": 0.5,
                        "eval/format_rate": 1.0, "eval/mc.n": 3, "eval/oe.n": 1, "eval/t2i.n_images": 8})
        rows.append(row)
    (stage_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # an absolute path from where the run was made: the report finds the checkpoint by name
    (stage_dir / "summary.json").write_text(json.dumps({
        "final_checkpoint": f"/elsewhere/{stage}/checkpoint-{steps}",
        "reward": {"mm2t": {"first": 0.6, "last": 0.9, "change": 0.3, "steps": steps, "window": 1}}}))
    (stage_dir / "config.yaml").write_text(f"stage: {stage}\nseed: 0\n")


def _fake_run(out: Path, settings: dict, seeds: list[int], finished: bool = True) -> None:
    from corl.report.demo import CURVE_BASE_FILE, PROVENANCE_FILE, RUN_FILE, seed_folder
    from corl.report.provenance import collect

    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_FILE).write_text(json.dumps({**settings, "seeds": seeds}))
    (out / PROVENANCE_FILE).write_text(json.dumps([collect(["corl", "demo", "--out", str(out)], seeds=seeds)]))
    for i, seed in enumerate(seeds):
        folder = seed_folder(out, seed, seeds)
        folder.mkdir(parents=True, exist_ok=True)
        _fake_evaluation(folder, "base", 0.0)
        (folder / CURVE_BASE_FILE).write_text(json.dumps({"eval/t2i.overall": 0.25, "eval/mc.accuracy": 0.3 + i / 10,
                                                          "eval/mc.n": 3, "eval/oe.n": 1, "eval/t2i.n_images": 8}))
        if finished:
            for stage in settings["stages"]:
                _fake_stage(folder, stage)
            _fake_evaluation(folder, "unified", 0.1)
            _fake_evaluation(folder, "final", 0.2 + i / 10)
        (folder / "timings.json").write_text(json.dumps({"runs": 1, "eval_base": 3.0, "total": 9.0}))


def _sections(markdown: str) -> list[str]:
    return re.findall(r"^## (.+)$", markdown, re.MULTILINE)


def _linked_images(markdown: str, folder: Path) -> list[Path]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown) + re.findall(r'<img src="([^"]+)"', markdown)
    return [folder / link for link in links]


def test_the_demo_report_shows_every_section_with_images_that_exist(tmp_path):
    from corl.report import write_demo_report

    out = tmp_path / "demo"
    _fake_run(out, SETTINGS, [0])
    report = write_demo_report(out)
    markdown = report.path.read_text()
    assert _sections(markdown) == [
        "Held-out results", "Fixed prompts, side by side", "Held-out curve during training", "Training rewards",
        "Training metrics per stage", "Failure examples (after refined)", "Provenance", "Checkpoints and time"]
    images = _linked_images(markdown, out)
    assert len(images) == 6 and all(p.is_file() for p in images), [p for p in images if not p.is_file()]
    for plot in ("prompt_grid.png", "heldout_curve.png", "stage-unified.png", "stage-mc.png"):
        assert out / "plots" / plot in images
    assert "**Status:** finished" in markdown
    assert "| multiple-choice accuracy | 7 |" in markdown and "(base → after refined)" in markdown
    assert "| refined multiple choice | understanding | 0.600 | 0.900 | +0.300 |" in markdown
    # accuracy, then the think text's share, per question template
    assert "| MC color (7) | 57.1 | 57.1 | 57.1 | +0.0 |" in markdown
    assert "Think text per question template" in markdown and "| MC color (7) | 50.0 | 60.0 | 70.0 | +20.0 |" in markdown
    assert "A. red" in markdown and "&lt;answer>B&lt;/answer>" in markdown  # escaped: not an HTML tag
    assert "command: `corl demo --out" in markdown and "torch " in markdown and "CPU cores" in markdown
    assert "recipe of the unified stage after overrides: unified/config.yaml" in markdown
    # checkpoints found inside the folder and named relative to it, whatever summary.json says
    assert "- refined multiple choice: `mc/checkpoint-4`" in markdown and "/elsewhere" not in markdown
    assert "t2i.overall" not in markdown and "mm2t" not in markdown.replace("recipes/", "")
    # one HTML file with every image inlined
    page = report.html_path.read_text()
    assert page.count('<img src="data:image/png;base64,') == len(images)
    assert 'src="plots/' not in page and "<h2>Provenance</h2>" in page


def test_a_killed_run_still_has_a_report_of_what_finished(tmp_path):
    """Only the base evaluation finished (the run was killed in the unified stage)."""
    from corl.report import write_demo_report

    out = tmp_path / "demo"
    _fake_run(out, SETTINGS, [0], finished=False)
    markdown = write_demo_report(out).path.read_text()
    assert "**Status: incomplete.** Finished: evaluation base." in markdown
    assert "Not (yet) done: unified stage, refined multiple choice stage, evaluation after unified" in markdown
    assert "| generation pass rate | 8 | 37.5 (13.7–69.4) | n/a | n/a | n/a |" in markdown
    assert _sections(markdown)[:2] == ["Held-out results", "Fixed prompts, side by side"]
    assert "Failure examples (base)" in _sections(markdown)
    assert all(p.is_file() for p in _linked_images(markdown, out))


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_a_run_killed_in_its_first_part_has_a_report_too(tmp_path, seeds):
    from corl.report import write_demo_report
    from corl.report.demo import RUN_FILE

    out = tmp_path / "demo"
    out.mkdir()
    (out / RUN_FILE).write_text(json.dumps({**SETTINGS, "seeds": seeds}))
    markdown = write_demo_report(out).path.read_text()
    assert "Finished: nothing yet" in markdown or "incomplete, not (yet) done: unified stage" in markdown
    assert "## Provenance" in markdown


def test_several_seeds_give_mean_and_std_in_the_same_report(tmp_path):
    from corl.report import write_demo_report

    out = tmp_path / "demo"
    _fake_run(out, SETTINGS, [0, 1])
    report = write_demo_report(out)
    markdown = report.path.read_text()
    assert report.path == out / "report.md"
    assert "Held-out results, mean ± std over seeds" in _sections(markdown)
    # generation: base 25.0 in both seeds; final 3 of 8 and 3 of 8 images (categories of 4)
    row = next(line for line in markdown.splitlines() if line.startswith("| multiple-choice accuracy |"))
    assert row == "| multiple-choice accuracy | 7 | 42.9 ± 0.0 | 57.1 ± 0.0 | 57.1 ± 0.0 | +14.3 ± 0.0 (+14.3, +14.3) |"
    assert "seed 0: [seed-0/report.md](seed-0/report.md)" in markdown
    assert "| refined multiple choice | understanding | 0.600 ± 0.000 | 0.900 ± 0.000 | +0.300 ± 0.000 | 2 of 2 |" \
        in markdown
    assert all(p.is_file() for p in _linked_images(markdown, out))
    for seed in (0, 1):
        own = (out / f"seed-{seed}" / "report.md").read_text()
        assert own.startswith(f"# corl demo report, seed {seed}") and "| multiple-choice accuracy | 7 |" in own
        assert all(p.is_file() for p in _linked_images(own, out / f"seed-{seed}"))


def test_the_pipeline_report_of_the_real_recipes(tmp_path):
    """`corl reproduce`'s report: scored evaluations with counts and intervals, image dumps named, every
    stage's metric families, provenance, checkpoints relative to the folder."""
    from corl.report import write_pipeline_report

    out = tmp_path / "ulm"
    for stage in ("unified", "t2i"):
        _fake_stage(out, stage)
    (out / "merged-mc-oe").mkdir()
    evals = {"mmstar": {"benchmark": "mmstar", "accuracy": 0.5, "n": 40, "mc.accuracy": 0.5, "mc.n": 40,
                        "oe.accuracy": None, "format_rate": 0.9, "settings": {"n_rows": 40}},
             # what `corl eval --suite geneval` writes (corl.eval.image_dumps)
             "geneval": {"suite": "geneval", "images": {"benchmark": "geneval", "outdir": str(out / "eval" / "geneval-images"),
                                                        "n_prompts": 2, "images_per_prompt": 4, "n_written": 2}}}
    report = write_pipeline_report(out, "CoRL pipeline: janus-pro-1b/paper", ["unified", "t2i", "mc", "oe"], evals,
                                   overrides=["train.max_steps=4"], extra_checkpoints={"merged": out / "merged-mc-oe"})
    markdown = report.path.read_text()
    low, high = wilson_interval(20, 40)
    assert f"| mmstar | accuracy | 40 | 50.0 ({100 * low:.1f}–{100 * high:.1f}) |" in markdown
    assert "geneval: 2 prompts x 4 images under `eval/geneval-images`" in markdown
    assert "**Status: incomplete.** Not (yet) finished: refined multiple choice, refined open-ended." in markdown
    assert "- refined generation: `t2i/checkpoint-4`" in markdown and "- merged: `merged-mc-oe`" in markdown
    assert _sections(markdown) == ["Evaluation", "Training rewards", "Training metrics per stage", "Provenance",
                                   "Checkpoints and time"]
    images = _linked_images(markdown, out)
    assert [p.name for p in images] == ["stage-unified.png", "stage-t2i.png"] and all(p.is_file() for p in images)
    assert report.html_path.read_text().count("data:image/png;base64,") == 2


def test_sampled_rows_pair_sampled_and_blind_per_model():
    from corl.report.tables import sampled_rows

    stats = {"accuracy": 0.5, "blind": 0.25, "contrast": 0.75, "n": 12}
    evals = {"base": {"oe.sampled_by_topic": {"exists": stats, "all": stats}},
             "after refined": {"oe.sampled_by_topic": {"exists": {**stats, "accuracy": 0.9}}},
             "greedy only": {"oe.accuracy": 0.5}}
    table = sampled_rows(evals)
    assert table.header == ["question (%)", "base: sampled / blind", "base: contrast", "after refined: sampled / blind",
                            "after refined: contrast"]
    assert table.rows[0] == ["OE exists (12)", "50.0 / 25.0", "75.0", "90.0 / 25.0", "75.0"]
    assert table.rows[1][3:] == ["n/a", "n/a"]  # "all" only in the base's result
    assert sampled_rows({"base": {"oe.accuracy": 0.5}}) is None
