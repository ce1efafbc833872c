"""One run per output folder: a second `corl train` into a folder a live run holds stops at once, naming
it; the first finishes unharmed; a dead run's lock does not block a resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corl.cli import main
from corl.training.run_lock import LOCK_FILE, RunInUse, RunLock
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy

REPO = Path(__file__).resolve().parents[2]


def test_lock_names_its_holder_and_is_released(tmp_path):
    first = RunLock.acquire(tmp_path)
    with pytest.raises(RunInUse, match=rf"in use by another corl run \(pid {os.getpid()} on "):
        RunLock.acquire(tmp_path)
    first.release()
    RunLock.acquire(tmp_path).release()  # free again


@pytest.mark.timeout(300)
def test_a_second_run_into_a_live_runs_folder_fails_at_once(tmp_path, capsys):
    model_dir = save_tiny_policy(tmp_path / "model")
    out = tmp_path / "run"
    env = {**os.environ, "CORL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "corl.cli", "train", "shapes-tiny/unified", "--out", str(out),
               f"model.name_or_path={model_dir}", *TINY_OVERRIDES, "train.max_steps=6"]
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text()) and time.time() < deadline:
            time.sleep(0.2)
        holder = json.loads((out / LOCK_FILE).read_text())
        start = time.perf_counter()
        code = main(["train", "shapes-tiny/unified", "--out", str(out), f"model.name_or_path={model_dir}",
                     *TINY_OVERRIDES, "--resume"])
        assert code == 2 and time.perf_counter() - start < 5
        assert f"pid {holder['pid']}" in capsys.readouterr().err
    finally:
        _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()[1:]]
    assert [r["step"] for r in rows] == list(range(1, 7))  # the first run's metrics, unmixed
    # the first run has ended: its lock is gone with its process, and the folder resumes
    assert main(["train", "shapes-tiny/unified", "--out", str(out), f"model.name_or_path={model_dir}",
                 *TINY_OVERRIDES, "train.max_steps=6", "--resume"]) == 0
