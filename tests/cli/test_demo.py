"""`corl demo` end to end on a tiny random model: stages chain, evaluations, pictures and the report are
written; the same command continues, other settings are refused (listed) unless --force; a moved run
folder continues from its own checkpoints."""

import json
import shutil

import pytest
from datasets import load_from_disk

from corl.cli import main
from corl.data import shapes_source
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy


@pytest.fixture
def tiny_world(tmp_path, monkeypatch):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CORL_SHAPES_BASE", str(save_tiny_policy(tmp_path / "base")))
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TRAIN", 16)
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TEST", 4)
    return tmp_path


def _argv(out, *extra):
    return ["demo", "--out", str(out), "--max-rows", "4", "--images-per-prompt", "1", "--stages", "unified,mc",
            *extra, *TINY_OVERRIDES]


def test_demo_pipeline_rerun_and_moved_folder(tiny_world, capsys):
    out = tiny_world / "demo"
    assert main(_argv(out)) == 0

    for name in ("run.json", "provenance.json", "eval_base.json", "eval_unified.json", "eval_final.json",
                 "report.md", "report.html", "curve_base.json", "grid/base/grid.json", "grid/final/grid.json",
                 "failures/final/failures.json", "plots/prompt_grid.png", "plots/heldout_curve.png",
                 "plots/stage-unified.png", "plots/stage-mc.png", "unified/summary.json", "mc/summary.json"):
        assert (out / name).is_file(), name
    final = json.loads((out / "eval_final.json").read_text())
    assert final["settings"]["model"] == "mc/checkpoint-1"  # recorded relative to the run folder
    assert final["settings"]["max_rows"] == 4 and len(final["details"]) == 4
    # accuracy without the held-out questions whose (scene, question) a stage's train split holds
    data = load_from_disk(str(shapes_source.default_shapes_dir(16, 4, 0, 32)))
    trained = set(zip(data["train"]["scene"], data["train"]["question"]))
    unseen = [d for d in final["details"] if (data["test"][d["index"]]["scene"], d["question"]) not in trained]
    assert len(unseen) == 4 and final["mc.n_unseen"] == 4  # (these 4 eval rows are all MC, none trained on)
    assert final["mc.accuracy_unseen"] == sum(d["correct"] for d in unseen) / 4
    assert "| multiple-choice accuracy, questions not trained on | 4 |" in (out / "report.md").read_text()
    # the refined stage started from the unified stage's final checkpoint
    assert f"name_or_path: {out / 'unified' / 'checkpoint-1'}" in (out / "mc" / "config.yaml").read_text()
    # the held-out curve: the trainer evaluated during each stage
    assert any("eval/mc.accuracy" in line for line in (out / "unified" / "metrics.jsonl").read_text().splitlines())
    report = (out / "report.md").read_text()
    assert "**Status:** finished" in report and "| generation pass rate | 4 |" in report
    assert "after unified" in report and "| unified | generation |" in report
    assert "Fixed prompts, side by side" in report and "Failure examples (after refined)" in report
    assert "per question template" in report and "| MC exists (" in report  # (these 4 eval rows are all MC)
    # the demo's default 8 sampled answers per question: the sampled-vs-blind table, per evaluated model
    assert final["settings"]["answer_samples"] == 8 and final["mc.sampled_by_topic"]["all"]["n"] == 4
    assert "What RL can elicit: 8 answers per question" in report and "base: sampled / blind" in report
    first = json.loads((out / "timings.json").read_text())
    assert first["runs"] == 1 and first["train_unified"] > 0 and first["total"] >= first["train_unified"]

    # The same command reads everything back: no stage trains again, the timings add up.
    before = (out / "unified" / "metrics.jsonl").read_text()
    assert main(_argv(out)) == 0
    assert (out / "unified" / "metrics.jsonl").read_text() == before
    second = json.loads((out / "timings.json").read_text())
    assert second["runs"] == 2 and all(second[k] >= first[k] for k in first if k != "runs")
    assert "summed over the 2 invocations" in (out / "report.md").read_text()

    # Other settings: refused in one line listing each difference, nothing changed.
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--max-rows", "3", "--images-per-prompt", "2", "--stages", "unified,mc",
                 *TINY_OVERRIDES]) == 2
    error = capsys.readouterr().err
    assert "images_per_prompt: 1 -> 2" in error and "max_rows: 4 -> 3" in error and "--force" in error
    assert json.loads((out / "run.json").read_text())["max_rows"] == 4

    # A moved folder (the original gone) continues from its own checkpoints; an interrupted stage of it
    # resumes although its config names the starting model at the old place.
    moved = tiny_world / "moved"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    (moved / "mc" / "summary.json").unlink()
    assert main(_argv(moved)) == 0
    assert (moved / "unified" / "metrics.jsonl").read_text() == before
    assert json.loads((moved / "mc" / "summary.json").read_text())["final_checkpoint"] == str(moved / "mc" / "checkpoint-1")
    change = json.loads((moved / "mc" / "config_changes.jsonl").read_text().splitlines()[-1])
    assert list(change["changes"]) == ["model.name_or_path"]
    report = (moved / "report.md").read_text()
    assert "- refined multiple choice: `mc/checkpoint-1`" in report and str(out) + "/" not in report.split("## Provenance")[0]


def test_force_deletes_what_the_earlier_run_wrote_and_records_the_new_settings(tmp_path):
    from corl.cli.demo import DEMO_WRITES, check_rerun

    out = tmp_path / "demo"
    old = {"seeds": [0], "max_rows": 300, "images_per_prompt": 4, "stages": ["unified"], "overrides": []}
    assert check_rerun(out, "demo", old, force=False, written=DEMO_WRITES) is False
    for name in ("eval_base.json", "unified/summary.json", "seed-1/eval_base.json", "report.md", "notes.txt"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}")
    assert check_rerun(out, "demo", old, force=False, written=DEMO_WRITES) is True  # the same: continues
    new = {**old, "max_rows": 10}
    with pytest.raises(ValueError, match="max_rows: 300 -> 10"):
        check_rerun(out, "demo", new, force=False, written=DEMO_WRITES)
    assert (out / "eval_base.json").is_file()
    with pytest.raises(ValueError, match="command: 'demo' -> 'pilot'"):
        check_rerun(out, "pilot", old, force=False, written=DEMO_WRITES)
    assert check_rerun(out, "demo", new, force=True, written=DEMO_WRITES) is False
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "run.json"]  # only the demo's own files go
    assert json.loads((out / "run.json").read_text())["max_rows"] == 10


def test_an_evaluation_made_with_other_settings_is_not_reused(tmp_path):
    """A folder without run.json (an older demo) still never reuses an evaluation of other settings."""
    from corl.cli.demo import DemoSettings, evaluate_checkpoint

    made = {"t2i.overall": 0.5, "settings": {"n_rows": 300, "images_per_prompt": 2, "seed": 0}}
    (tmp_path / "eval_base.json").write_text(json.dumps(made))
    with pytest.raises(ValueError, match="images_per_prompt: 2 -> 4"):
        evaluate_checkpoint("unused", tmp_path / "eval_base.json", DemoSettings(out=tmp_path), name="base")


def test_training_pairs_of_data_it_cannot_read_back_is_none(tmp_path):
    from corl.cli.demo import DemoSettings, training_pairs

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"question": "q", "solution": "<answer>a</answer>"}\n')
    for overrides in ([f"data.source={jsonl}"], [f"data.source={tmp_path / 'missing'}"],
                      ["data.column_map={question: qa_problem}"]):
        assert training_pairs(DemoSettings(out=tmp_path / "demo", overrides=overrides)) is None, overrides
