"""`corl pilot` on a tiny random model: arms follow their budgets and the table is written."""

import json


from corl.cli import main
from corl.cli.pilot import PAPER_UNIFIED, UNIFIED_VARIANTS, arm_overrides, arm_schedule, unified_batch_size
from corl.data import shapes_source
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy


def test_equal_budgets_in_sampled_completions():
    # a unified step samples both tasks: single-task arms get twice the steps
    assert arm_schedule("unified", 10) == [("unified", 10)]
    assert arm_schedule("gen-only", 10) == [("t2i", 20)]
    assert arm_schedule("und-only", 10) == [("mm2t", 20)]
    cycle = arm_schedule("cycle", 10)
    assert [s for s, _ in cycle] == ["t2i", "mm2t", "t2i", "mm2t"] and sum(n for _, n in cycle) == 20
    assert arm_schedule("base", 10) == []


def test_unified_variants_change_the_papers_setting_at_the_unified_budget():
    from corl.config import load_config, resolve_recipe

    for variant, change in UNIFIED_VARIANTS.items():
        assert arm_schedule(variant, 10) == [("unified", 10)]
        overrides = arm_overrides(variant, 10, 4)
        assert overrides[:3] == ("train.max_steps=10", "grpo.beta=0", "train.per_device_batch_size=4")
        assert overrides[3:] == PAPER_UNIFIED + change  # the paper's unified setting, then the change
        cfg = load_config(resolve_recipe("shapes-tiny/unified"), list(overrides))  # a valid config
        for setting in change:
            key, value = setting.split("=")
            section, name = key.split(".")
            assert str(getattr(getattr(cfg, section), name)) == value
    assert arm_overrides("unified", 10, 4)[1] == "grpo.beta=0"
    # the unified arm is the paper's, whatever the shipped recipe's own unified_mode
    paper = load_config(resolve_recipe("shapes-tiny/unified"), list(arm_overrides("unified", 10, 4))).grpo
    assert (paper.unified_mode, paper.unified_lambda, paper.unified_task_scale) == ("joint_reward", 0.8, "none")
    assert arm_overrides("gen-only", 10, 4)[3:] == ()


def test_pilot_runs_every_arm(tmp_path, monkeypatch):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CORL_SHAPES_BASE", str(save_tiny_policy(tmp_path / "base")))
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TRAIN", 16)
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TEST", 4)
    overrides = [o for o in TINY_OVERRIDES if not o.startswith(("data.shapes_n_", "train.max_steps"))]
    out = tmp_path / "pilot"
    argv = ["pilot", "--out", str(out), "--steps", "1", "--max-rows", "2", "--images-per-prompt", "1",
            "--arms", "base", "cycle", "unified", *overrides]
    assert main(argv) == 0
    saved = json.loads((out / "pilot.json").read_text())
    assert set(saved["table"]) == {"base", "cycle", "unified"}
    assert [p.name for p in sorted((out / "seed-0" / "cycle").glob("*-*"))] == ["0-t2i", "1-mm2t", "2-t2i", "3-mm2t"]
    assert (out / "pilot.md").is_file() and (out / "pilot.html").is_file() and (out / "pilot.png").is_file()
    report = (out / "pilot.md").read_text()
    for section in ("## Change from the base", "## Generation per category", "## Open-ended accuracy per question template",
                    "## Provenance"):
        assert section in report
    assert set(saved["changes_from_base"]) == {"cycle", "unified"}
    # every arm samples as many prompts per step as the unified recipe (t2i's own recipe samples more)
    batches = {json.loads(line)["header"]["per_device_batch_size"]
               for path in (out / "seed-0").glob("*/*/metrics.jsonl") for line in path.open() if '"header"' in line}
    assert batches == {unified_batch_size([o for o in TINY_OVERRIDES if not o.startswith("data.shapes_n_")])}
    # the pilot's own stages: no in-training evaluation (the demo's curve)
    assert not list((out / "seed-0").glob("*/*/eval"))

    # the demo's re-run rule: other settings are refused, listed
    assert main([*argv[:4], "2", *argv[5:]]) == 2
    assert json.loads((out / "run.json").read_text())["steps"] == 1
