"""`corl demo` end to end on a tiny random model: stages chain, evaluations and the report are written,
and a re-run resumes instead of starting over."""

import json

from corl.cli import main
from corl.data import shapes_source
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy


def test_demo_pipeline_and_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CORL_SHAPES_BASE", str(save_tiny_policy(tmp_path / "base")))
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TRAIN", 16)
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TEST", 4)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("data.shapes_n_")]
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--eval-rows", "4", "--images-per-prompt", "1",
            "--stages", "unified,mc", *overrides]
    assert main(argv) == 0

    for name in ("eval_base.json", "eval_unified.json", "eval_final.json", "report.md",
                 "plots/metrics.png", "plots/reward_curves.png", "unified/summary.json", "mc/summary.json"):
        assert (out / name).is_file(), name
    final = json.loads((out / "eval_final.json").read_text())
    for key in ("t2i.overall", "mc.accuracy", "oe.accuracy", "format_rate"):
        assert key in final
    # the refined stage started from the unified stage's final checkpoint
    mc_config = (out / "mc" / "config.yaml").read_text()
    unified_final = json.loads((out / "unified" / "summary.json").read_text())["final_checkpoint"]
    assert f"name_or_path: {unified_final}" in mc_config
    report = (out / "report.md").read_text()
    assert "| generation pass rate" in report and "after unified" in report and "| unified | t2i |" in report
    assert "per question template" in report and "| MC exists (" in report  # (these 4 eval rows are all MC)

    first = json.loads((out / "timings.json").read_text())
    assert first["runs"] == 1 and first["train_unified"] > 0 and first["total"] >= first["train_unified"]

    # A second run reads everything back: no stage trains again, and the timings are the first run's
    # plus the (short) time of reading back, not the read-back time alone.
    before = (out / "unified" / "metrics.jsonl").read_text()
    assert main(argv) == 0
    assert (out / "unified" / "metrics.jsonl").read_text() == before
    second = json.loads((out / "timings.json").read_text())
    assert second["runs"] == 2
    assert all(second[k] >= first[k] for k in first if k != "runs")
    assert "summed over the 2 runs" in (out / "report.md").read_text()
