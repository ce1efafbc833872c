"""Resuming: a run stopped after step k (as if killed) and resumed ends with the same parameters and
metrics as an uninterrupted run; checkpoints are complete directories, stale *.tmp saves are ignored
and removed, and only the newest `save_total_limit` checkpoints stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corl.config import load_config
from corl.trainer import train
from corl.training.checkpoint import STATE_FILE, list_checkpoints
from corl.training.testing import save_tiny_policy, tiny_config
from corl.training.tracking import read_metrics

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_policy(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module", autouse=True)
def corl_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORL_CACHE", str(tmp_path_factory.mktemp("corl_cache")))
        yield


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
    assert worst <= 1e-6, f"largest parameter difference {worst}"


def metric_rows(out: Path) -> list[dict]:
    return read_metrics(out / "metrics.jsonl")[1]


@pytest.mark.parametrize(
    "name, overrides, steps, stop",
    [
        # Both tasks, KL against a frozen reference (reloaded from the start model on resume), a cosine
        # schedule with warmup (its position must be restored).
        ("full", ["grpo.beta=0.05", "optim.lr_scheduler=cosine", "optim.warmup_ratio=0.34"], 3, 1),
        # LoRA: adapters are restored on top of the start model; the reference is the adapter switched off.
        ("lora", ["model.lora_r=4", "grpo.beta=0.05"], 2, 1),
    ],
)
def test_resume_matches_an_uninterrupted_run(model_dir, tmp_path, name, overrides, steps, stop):
    cfg = tiny_config(model_dir, "unified", [*overrides, f"train.max_steps={steps}", "train.save_steps=1",
                                            "train.save_total_limit=2"])
    straight = train(cfg, tmp_path / "straight")

    out = tmp_path / "resumed"
    stopped = train(cfg, out, stop_after_step=stop)
    assert stopped.stopped_early and stopped.steps == stop and not (out / "summary.json").exists()
    # A kill during a later save leaves a half-written directory: it must be neither used nor kept.
    (out / f"checkpoint-{stop + 1}.tmp").mkdir()
    (out / f"checkpoint-{stop + 1}.tmp" / "model.safetensors").write_bytes(b"partial")
    resumed = train(cfg, out, resume=True)

    assert resumed.steps == steps and not (out / f"checkpoint-{stop + 1}.tmp").exists()
    assert_same_weights(straight.final_checkpoint, resumed.final_checkpoint)
    rows_a, rows_b = metric_rows(tmp_path / "straight"), metric_rows(out)
    assert [r["step"] for r in rows_b] == list(range(1, steps + 1))  # no duplicated or lost step rows
    for a, b in zip(rows_a, rows_b):
        for key in ("reward/t2i/mean", "reward/mm2t/mean", "grad_norm", "learning_rate", "kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (key, a["step"])
    state = json.loads((resumed.final_checkpoint / STATE_FILE).read_text())
    assert state["step"] == steps and state["data_step"] == steps and state["lora"] == (name == "lora")
    assert [s for s, _ in list_checkpoints(out)] == list(range(max(1, steps - 1), steps + 1))  # newest 2 kept
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"]["t2i"]["steps"] == steps  # the summary sees the steps before the resume too


def test_resume_from_an_explicit_checkpoint_and_errors(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "t2i", ["train.max_steps=2", "train.save_steps=1", "train.save_total_limit=0"])
    out = tmp_path / "run"
    train(cfg, out)
    assert [s for s, _ in list_checkpoints(out)] == [1, 2]  # save_total_limit=0 keeps all
    # Resuming a finished run from its last checkpoint has nothing left to do.
    again = train(cfg, out, resume=out / "checkpoint-2")
    assert again.steps == 2 and again.final_checkpoint == out / "checkpoint-2"
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        train(cfg, out, resume=tmp_path / "nowhere")
    other = tiny_config(cfg.model.name_or_path, "mc", ["train.max_steps=2"])
    with pytest.raises(ValueError, match="stage: 't2i' -> 'mc'"):  # a changed config names the change
        train(other, out, resume=True)
    with pytest.raises(ValueError, match="stage t2i"):  # even when changes are allowed, not the stage
        train(other, out, resume=True, allow_config_change=True)


def test_resume_of_a_run_killed_before_its_first_checkpoint_restarts_and_keeps_its_metrics(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "t2i", ["train.max_steps=1"])
    out = tmp_path / "run"
    out.mkdir()
    killed = '{"header": {"stage": "t2i"}}\n{"step": 1, "loss": 0.5}\n'
    (out / "metrics.jsonl").write_text(killed)  # what a run killed during step 2, before any save, leaves
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, out)  # without --resume nothing is overwritten
    result = train(cfg, out, resume=True)
    assert result.steps == 1 and result.final_checkpoint is not None
    assert (out / "metrics.restarted-1.jsonl").read_text() == killed
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl")[1]] == [1]


def test_resume_with_a_changed_config_is_refused_unless_allowed_and_then_recorded(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "t2i", ["train.max_steps=2"])
    out = tmp_path / "run"
    train(cfg, out, stop_after_step=1)
    changed = tiny_config(model_dir, "t2i", ["train.max_steps=2", "optim.learning_rate=1e-4"])
    with pytest.raises(ValueError, match=r"changed config \(optim.learning_rate: 0.001 -> 0.0001\).*"
                                         r"--allow-config-change"):
        train(changed, out, resume=True)
    assert load_config(out / "config.yaml").optim.learning_rate == 1e-3  # the run's config is untouched
    result = train(changed, out, resume=True, allow_config_change=True)
    assert result.steps == 2
    record = json.loads((out / "config_changes.jsonl").read_text())
    assert record["changes"] == {"optim.learning_rate": [1e-3, 1e-4]}
    assert load_config(out / "config.yaml").optim.learning_rate == 1e-4
