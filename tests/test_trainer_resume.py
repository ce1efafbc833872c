"""Resuming: a run stopped after step k (as if killed) and resumed ends with the same parameters and
metrics as an uninterrupted run; checkpoints are complete directories, stale *.tmp saves are ignored
and removed, and only the newest `save_total_limit` checkpoints stay."""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corl.config import load_config
from corl.errors import DiskFull
from corl.trainer import train
from corl.training import checkpoint as ckpt
from corl.training.checkpoint import STATE_FILE, list_checkpoints
from corl.training.run_lock import RunLock
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
    with pytest.raises(FileNotFoundError, match="nowhere: no such file or directory"):
        train(cfg, out, resume=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory .* holds no checkpoint-N"):
        train(cfg, out, resume=tmp_path / "empty")
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


# ------------------------------------------------------------------ damaged run folders, full disk

DAMAGED_STEPS = ["train.max_steps=3", "train.save_steps=1", "train.save_total_limit=0", "train.log_rollouts=true"]


@pytest.fixture(scope="module")
def stopped_run(model_dir, tmp_path_factory) -> Path:
    """A t2i run of 3 steps stopped after step 2: checkpoint-1, checkpoint-2, metrics rows 1 and 2."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    train(tiny_config(model_dir, "t2i", DAMAGED_STEPS), out, stop_after_step=2)
    return out


@pytest.fixture
def run_copy(stopped_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "name, spoil, said",
    [
        (STATE_FILE, lambda p: p.write_text("garbage"), "is damaged (not JSON"),
        (STATE_FILE, _cut, "is damaged (not JSON"),
        (STATE_FILE, lambda p: p.write_text(p.read_text().replace('"step"', '"stpe"')), "is damaged (no step)"),
        # an incomplete newest checkpoint is reported: --resume never goes back to an older one silently
        (STATE_FILE, lambda p: p.unlink(), "is missing"),
        ("model.safetensors", lambda p: p.unlink(), "is missing"),
        ("model.safetensors", _cut, "is damaged (not a complete safetensors file"),
        ("optimizer.pt", _cut, "is damaged (not a complete torch.save file"),
        ("optimizer.pt", lambda p: p.write_bytes(b"garbage"), "is damaged (not a complete torch.save file"),
        ("rng_state_0.pth", _cut, "is damaged (not a complete torch.save file"),
    ],
)
def test_resume_from_a_damaged_checkpoint_names_the_file_and_the_one_before(model_dir, run_copy, name, spoil, said):
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    spoil(run_copy / "checkpoint-2" / name)
    before = _files(run_copy)
    expected = (f"{run_copy / 'checkpoint-2' / name} {said}" + r".*" +
                f": resume from an earlier checkpoint with --resume-from {run_copy / 'checkpoint-1'}, or start afresh")
    for resume in (True, run_copy, run_copy / "checkpoint-2"):  # --resume, --resume OUT, --resume OUT/checkpoint-2
        with pytest.raises(ValueError, match=re.escape(expected).replace(re.escape(".*"), ".*")):
            train(cfg, run_copy, resume=resume)
    assert _files(run_copy) == before  # refused before anything was loaded or written


def test_resume_from_the_checkpoint_before_a_damaged_one_replaces_it(model_dir, run_copy):
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    _cut(run_copy / "checkpoint-2" / "optimizer.pt")
    result = train(cfg, run_copy, resume=run_copy / "checkpoint-1")
    assert result.steps == 3
    assert [s for s, _ in list_checkpoints(run_copy)] == [1, 2, 3]
    ckpt.check_checkpoint(run_copy / "checkpoint-2", lora=False)  # written again, whole
    assert [r["step"] for r in metric_rows(run_copy)] == [1, 2, 3]


def test_a_checkpoint_that_fails_only_when_loaded_is_named_and_the_run_folder_released(model_dir, run_copy):
    """The zip directory of optimizer.pt is intact but its pickle was overwritten: the quick check passes,
    torch.load fails; the error names the file and the folder is not left locked."""
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    path = run_copy / "checkpoint-2" / "optimizer.pt"
    data = bytearray(path.read_bytes())
    start = data.index(b"\x80\x02")
    data[start + 2: start + 12] = b"\x00" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(ckpt.DamagedCheckpoint, match=f"{path} is damaged .*--resume-from {run_copy / 'checkpoint-1'}"):
        train(cfg, run_copy, resume=True)
    RunLock.acquire(run_copy).release()  # free again


def test_resume_drops_torn_last_lines_of_the_metrics_and_rollout_logs(model_dir, run_copy, caplog):
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    metrics = run_copy / "metrics.jsonl"
    rollouts = run_copy / "rollouts" / "rank0.jsonl"
    # Killed while logging step 3, after its rows were half written and before checkpoint-3:
    with metrics.open("a") as f:
        f.write('{"step": 3, "loss": 123.0, "reward/t2i/mean": 0.5}\n{"step": 4, "loss": 0.1')
    with rollouts.open("a") as f:
        f.write('{"step": 3, "data_st')
    with caplog.at_level("WARNING"):
        result = train(cfg, run_copy, resume=True)
    assert result.steps == 3
    assert f"{metrics}: dropping its last line" in caplog.text and f"{rollouts}: dropping its last line" in caplog.text
    rows = metric_rows(run_copy)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["loss"] != 123.0  # step 3 written again
    assert [json.loads(line)["step"] for line in rollouts.read_text().splitlines()] == [1, 2, 3]


def test_a_damaged_line_inside_the_metrics_is_reported_before_anything_loads(model_dir, run_copy):
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    metrics = run_copy / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"  # the row of step 1, cut off, with rows after it
    metrics.write_text("".join(lines))
    with pytest.raises(ValueError, match=rf"{metrics}: line 2 is not a JSON object \(.*\): the file is damaged"):
        train(cfg, run_copy, resume=True)
    RunLock.acquire(run_copy).release()


@pytest.mark.parametrize(
    "error, free",
    [
        (OSError(errno.ENOSPC, "No space left on device"), None),
        # torch.save's zip writer on a full disk: no errno, the device's free space tells
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), 3 * 2**20),
    ],
)
def test_a_full_disk_while_saving_stops_with_one_line_and_keeps_the_earlier_checkpoints(
        model_dir, run_copy, monkeypatch, error, free):
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    kept = _files(run_copy / "checkpoint-2")
    real_save = torch.save

    def fill_the_disk(obj, path, *args, **kwargs):
        if "checkpoint-3.tmp" in str(path) and Path(path).name == "optimizer.pt":
            Path(path).write_bytes(b"partial")
            raise error
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_the_disk)
    if free is not None:
        usage = shutil.disk_usage(run_copy)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))
    with pytest.raises(DiskFull) as caught:
        train(cfg, run_copy, resume=True)
    assert re.fullmatch(rf"no space left on device while writing {re.escape(str(run_copy / 'checkpoint-3'))} "
                        r"\(free \d+ MiB, it needs about \d+ MiB\): free space, then resume with --resume",
                        str(caught.value)), str(caught.value)
    assert not (run_copy / "checkpoint-3.tmp").exists() and not (run_copy / "checkpoint-3").exists()
    assert _files(run_copy / "checkpoint-2") == kept
    ckpt.check_checkpoint(run_copy / "checkpoint-2", lora=False)

    monkeypatch.undo()  # space freed: the run resumes from checkpoint-2 and finishes
    result = train(cfg, run_copy, resume=True)
    assert result.steps == 3 and [r["step"] for r in metric_rows(run_copy)] == [1, 2, 3]


def test_a_full_disk_outside_checkpoints_is_one_line_too(model_dir, run_copy, monkeypatch):
    """Any other write of the run (here summary.json) failing with ENOSPC stops with DiskFull naming it."""
    cfg = tiny_config(model_dir, "t2i", DAMAGED_STEPS)
    real_write_text = Path.write_text

    def fill_the_disk(self, text, *args, **kwargs):
        if self.name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fill_the_disk)
    with pytest.raises(DiskFull, match=rf"while writing {run_copy / 'summary.json'} \(free \d+ MiB\)"):
        train(cfg, run_copy, resume=True)
