"""Run folders: damaged checkpoints and logs, resumes with other settings, two runs into one folder, a full
disk, rewards that are never usable. Each is one line naming the file (and the checkpoint to go back
to); the run's earlier checkpoints and metrics stay byte for byte as they were."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from corl.rewards import register_function, unregister
from corl.training.run_lock import LOCK_FILE, RunLock
from corl.training.testing import TINY_OVERRIDES

STEPS = ("train.max_steps=3", "train.save_steps=1", "train.save_total_limit=0")
RECIPE = "shapes-tiny/t2i"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, fuzz_model) -> Path:
    """A 3-step t2i run with checkpoint-1..3, made once through the command line."""
    from corl.cli import main

    root = tmp_path_factory.mktemp("finished")
    os.environ.setdefault("CORL_CACHE", str(root / "cache"))
    out = root / "run"
    assert main(["train", RECIPE, "--out", str(out), f"model.name_or_path={fuzz_model}", *TINY_OVERRIDES,
                 *STEPS]) == 0
    return out


@pytest.fixture
def run(fuzz, finished_run) -> Path:
    """A private copy of the finished run, at the same relative place for every case."""
    target = fuzz.tmp / "run"
    shutil.copytree(finished_run, target)
    return target


def resume(fuzz, run: Path, *extra: str, at: str | None = None):
    """`corl train RECIPE --out RUN --resume [AT]` with the run's own settings plus `extra`."""
    return fuzz.train(RECIPE, run, *STEPS, *extra, resume=at or "auto")


def protect_earlier(fuzz, run: Path) -> None:
    fuzz.protect(run / "checkpoint-1", run / "checkpoint-2")


# ----------------------------------------------------------------------------- damaged run folders

def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(200))


def _drop_key(path: Path) -> None:
    state = json.loads(path.read_text())
    state.pop("step")
    path.write_text(json.dumps(state))


DAMAGE = [
    ("trainer_state.json", _garbage),
    ("trainer_state.json", _truncate),
    ("trainer_state.json", _drop_key),
    ("trainer_state.json", Path.unlink),
    ("model.safetensors", Path.unlink),
    ("model.safetensors", _truncate),
    ("model.safetensors", _garbage),
    ("config.json", _garbage),
    ("optimizer.pt", _truncate),
    ("optimizer.pt", Path.unlink),
    ("scheduler.pt", _garbage),
    ("rng_state_0.pth", _truncate),
]


@pytest.mark.parametrize(("name", "spoil"), DAMAGE, ids=[f"{n}-{f.__name__.strip('_')}" for n, f in DAMAGE])
def test_a_damaged_newest_checkpoint_names_the_file_and_the_one_before(fuzz, run, name, spoil):
    spoil(run / "checkpoint-3" / name)
    protect_earlier(fuzz, run)
    fuzz.protect(run / "metrics.jsonl")
    fuzz.expect_error(resume(fuzz, run), (f"checkpoint-3/{name}", "checkpoint-2"))


def test_a_crafted_rng_pickle_is_refused_not_run(fuzz, run):
    marker = fuzz.tmp / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (run / "checkpoint-3" / "rng_state_0.pth").write_bytes(pickle.dumps({"python": Payload()}))
    fuzz.expect_error(resume(fuzz, run), "rng_state_0.pth")
    assert not marker.exists()


def test_a_torn_last_metrics_line_is_dropped_and_the_run_resumes(fuzz, run):
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 4, "loss": 0.1')
    protect_earlier(fuzz, run)
    result = resume(fuzz, run, "train.max_steps=3")
    fuzz.skipped(result, "metrics.jsonl", "cut off")


def test_a_damaged_metrics_line_inside_the_file_is_named(fuzz, run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:10]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    protect_earlier(fuzz, run)
    fuzz.expect_error(resume(fuzz, run), ("metrics.jsonl", "line 2"))


def test_a_damaged_config_yaml_is_named(fuzz, run):
    (run / "config.yaml").write_text("stage: [t2i\n")
    protect_earlier(fuzz, run)
    fuzz.expect_error(resume(fuzz, run), "config.yaml")


def test_resume_from_a_missing_path_is_named(fuzz, run):
    fuzz.expect_error(resume(fuzz, run, at=str(run / "checkpoint-9")), "checkpoint-9")


def test_resume_from_a_folder_that_is_no_checkpoint_is_named(fuzz, run):
    (fuzz.tmp / "elsewhere").mkdir()
    fuzz.expect_error(resume(fuzz, run, at=str(fuzz.tmp / "elsewhere")), "elsewhere")


def test_a_leftover_half_written_checkpoint_is_cleared_on_resume(fuzz, run):
    (run / "checkpoint-4.tmp").mkdir()
    (run / "checkpoint-4.tmp" / "optimizer.pt").write_bytes(b"partial")
    protect_earlier(fuzz, run)
    fuzz.expect_ok(resume(fuzz, run, "train.max_steps=4", "--allow-config-change"))
    assert not (run / "checkpoint-4.tmp").exists() and (run / "checkpoint-4" / "model.safetensors").is_file()


def test_resume_into_an_empty_folder_starts_afresh(fuzz):
    fuzz.expect_ok(fuzz.train(RECIPE, "fresh", "train.max_steps=1", resume="auto"))
    assert (fuzz.tmp / "fresh" / "checkpoint-1").is_dir()


# ---------------------------------------------------------------------------- settings and folders


def test_resume_with_changed_settings_is_refused_and_lists_them(fuzz, run):
    protect_earlier(fuzz, run)
    fuzz.protect(run / "config.yaml")
    fuzz.expect_error(resume(fuzz, run, "optim.learning_rate=0.01", "train.per_device_batch_size=3"),
                      ("optim.learning_rate", "train.per_device_batch_size", "--allow-config-change"))


def test_resume_with_changed_settings_when_allowed_is_recorded(fuzz, run):
    protect_earlier(fuzz, run)
    fuzz.expect_ok(resume(fuzz, run, "optim.learning_rate=0.01", "train.max_steps=4", "--allow-config-change"))
    change = json.loads((run / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["changes"]["optim.learning_rate"] == [0.001, 0.01]


def test_resume_as_another_stage_is_refused_even_when_allowed(fuzz, run):
    protect_earlier(fuzz, run)
    fuzz.expect_error(fuzz.train("shapes-tiny/mc", run, *STEPS, "--allow-config-change", resume="auto"), "stage")


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused(fuzz, run):
    fuzz.protect(*run.glob("checkpoint-*"), run / "metrics.jsonl", run / "config.yaml")
    fuzz.expect_error(fuzz.train(RECIPE, run, *STEPS), ("already holds a run", "--resume"))


def test_a_run_into_a_folder_another_live_run_holds_is_refused_naming_it(fuzz, run):
    lock = RunLock.acquire(run)  # another open file: flock refuses it like another process's
    try:
        fuzz.protect(run / "checkpoint-3", run / "metrics.jsonl")
        fuzz.expect_error(resume(fuzz, run), (str(os.getpid()), "in use"))
    finally:
        lock.release()


def test_a_stale_lock_file_of_a_dead_run_does_not_block(fuzz, run):
    (run / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "command": "corl train"}))
    fuzz.expect_ok(resume(fuzz, run, "train.max_steps=4", "--allow-config-change"))


def test_two_processes_into_one_folder_the_second_fails_at_once(fuzz, fuzz_model):
    """Two real `corl train` processes: the second stops in one line naming the first one's pid; the first
    goes on. (The first is stopped once the second has been refused.)"""
    env = {**os.environ, "CORL_CACHE": str(fuzz.tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "corl.cli", "train", RECIPE, "--out", "shared", f"model.name_or_path={fuzz_model}",
            *TINY_OVERRIDES, "train.max_steps=100000", "train.save_steps=0"]
    first = subprocess.Popen(argv, cwd=fuzz.tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = fuzz.tmp / "shared" / LOCK_FILE
        deadline = time.time() + 120
        while not (lock.is_file() and str(first.pid) in lock.read_text()) and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run([*argv[:-2], "seed=7"], cwd=fuzz.tmp, env=env, capture_output=True, text=True,
                                timeout=300)
        assert first.poll() is None  # the first is untouched and still running
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(first.pid) in errors[0], second.stderr[-2000:]
    fuzz.record("error")


# ----------------------------------------------------------------------------------------- full disk


def test_a_full_disk_while_saving_keeps_the_earlier_checkpoints(fuzz, run, monkeypatch):
    real_save = torch.save

    def full(obj, path, *args, **kwargs):
        if "checkpoint-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    fuzz.protect(run / "checkpoint-3", run / "checkpoint-2")
    result = resume(fuzz, run, "train.max_steps=4", "--allow-config-change")
    fuzz.expect_error(result, ("no space left on device", "checkpoint-4", "--resume"))
    assert not (run / "checkpoint-4.tmp").exists()


def test_a_full_disk_reported_by_torch_as_unexpected_pos(fuzz, run, monkeypatch):
    real_save = torch.save

    def full(obj, path, *args, **kwargs):
        if "checkpoint-4" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, path, *args, **kwargs)

    usage = shutil.disk_usage(run)
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=2**20))
    fuzz.protect(run / "checkpoint-3")
    fuzz.expect_error(resume(fuzz, run, "train.max_steps=4", "--allow-config-change"),
                      ("no space left on device", "checkpoint-4"))


def test_a_full_disk_while_writing_metrics(fuzz, run, monkeypatch):
    real_open = Path.open

    def full_open(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_open)
    protect_earlier(fuzz, run)
    fuzz.expect_error(resume(fuzz, run, "train.max_steps=4", "--allow-config-change"),
                      ("no space left on device", "metrics.jsonl"))


def test_a_full_disk_while_writing_a_generated_grid(fuzz, monkeypatch):
    from PIL import Image

    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    fuzz.error("generate", "--prompt", "two circles", "--model", fuzz.model, "-n", "1", "--out", "grid.png",
               names=("no space left on device", "grid.png"))


# ------------------------------------------------------------------------------ rewards that fail


@pytest.fixture
def nan_reward():
    register_function("fuzz_nan", lambda prompts, completions, **kw: [float("nan")] * len(completions))
    yield "fuzz_nan"
    unregister("fuzz_nan")


def test_a_reward_that_is_never_usable_stops_the_run(fuzz, nan_reward):
    result = fuzz.train(RECIPE, "nan-run", f"rewards.t2i_reward_funcs=[{nan_reward}]",
                        "rewards.t2i_reward_weights=[1.0]", "train.max_steps=10")
    fuzz.expect_error(result, ("no usable t2i reward", nan_reward))
    rows = [json.loads(line) for line in (fuzz.tmp / "nan-run" / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in row or "header" in row for row in rows)  # whole lines only


def test_an_unknown_reward_is_named_before_the_model_loads(fuzz):
    fuzz.error("train", "shapes-tiny/unified", "--out", "run", "rewards.mm2t_reward_funcs=[frobnicate,format]",
               names="frobnicate")


def test_prompts_over_the_length_limit_are_cut_and_counted(fuzz):
    result = fuzz.expect_ok(fuzz.train(RECIPE, "short", "rollout.max_prompt_length=12"))
    rows = [json.loads(line) for line in (fuzz.tmp / "short" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["prompts/t2i/cut"] > 0 and "lost the start of their text" in result.text


def test_a_damaged_summary_of_a_finished_demo_stage_is_named(fuzz, finished_run):
    """`corl demo` / `corl reproduce` read back finished stages; a damaged summary.json is named."""
    stage = fuzz.tmp / "demo" / "unified"
    shutil.copytree(finished_run, stage)
    (stage / "summary.json").write_text('{"final_checkpoint": ')
    fuzz.error("demo", "--out", "demo", "--stages", "unified", "--max-rows", "2", names="summary.json")


def test_an_output_folder_that_is_a_file_is_named(fuzz):
    fuzz.write("taken", "a file")
    fuzz.expect_error(fuzz.train(RECIPE, "taken", *STEPS), "taken")
    assert (fuzz.tmp / "taken").read_text() == "a file"
