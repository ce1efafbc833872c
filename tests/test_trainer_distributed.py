"""Two CPU processes (gloo) through `accelerate launch` with the shipped DDP config, with the recipes'
default `model.device` (the README's command): the same `corl train` command trains in sync (identical
parameters on both ranks afterwards, and they did change), each rank draws different rows and different
rollouts, and the logged metrics are gathered over both ranks. Killing the launcher stops its workers,
and `--resume` then continues to the same weights, bit for bit, as an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corl.config import recipes_dir
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy, tiny_config
from corl.training.tracking import read_metrics

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(model_dir: Path, out: Path, *extra: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """The README's 2-process DDP launch of `corl train shapes-tiny/unified`, shrunk by TINY_OVERRIDES
    (`launcher`: other `accelerate launch` options, replacing the single-machine DDP config)."""
    accelerate = Path(sys.executable).parent / "accelerate"
    launcher = launcher or ("--config_file", str(recipes_dir() / "accelerate" / "ddp.yaml"),
                            "--main_process_port", str(free_port()))
    return [
        str(accelerate), "launch", *launcher, "--num_processes", "2", "-m", "corl.cli",
        "train", "shapes-tiny/unified", "--out", str(out), f"model.name_or_path={model_dir}", *TINY_OVERRIDES,
        *extra,
    ]


def launch_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "CORL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def launch(model_dir: Path, out: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(launch_command(model_dir, out, *extra), check=False, cwd=REPO, env=launch_env(tmp_path),
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def console_log_lines(done: subprocess.CompletedProcess) -> list[str]:
    """The log lines a user sees (both streams; progress-bar redraws split off), without their time."""
    text = (done.stdout + "\n" + done.stderr).replace("\r", "\n")
    return [line.split(" ", 1)[1] for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d(\s|\[)", line)]


@pytest.mark.timeout(300)
def test_two_processes_train_in_sync_on_different_samples(tmp_path):
    model_dir = save_tiny_policy(tmp_path / "model")
    out = tmp_path / "run"
    done = launch(model_dir, out, tmp_path, "train.max_steps=2", "train.log_rollouts=true")

    # The console shows each log line once: rank 0 logs, the other rank only warnings, marked with its rank.
    lines = console_log_lines(done)
    info = [line for line in lines if " INFO " in line]
    assert info and len(info) == len(set(info)), "\n".join(lines)
    assert all(line.startswith("[rank 0]") for line in info)
    assert not any(line.startswith("[rank 1]") and " INFO " in line for line in lines)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    digests = summary["parameter_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1] and summary["ranks_in_sync"] is True

    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(out / "checkpoint-2" / "model.safetensors"))
    layers = [k for k in before if k.startswith("model.language_model.layers.")]
    assert all(not torch.equal(before[k], after[k]) for k in layers if k.endswith("proj.weight"))

    ranks = [[json.loads(line) for line in (out / "rollouts" / f"rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert [line["step"] for line in ranks[0]] == [line["step"] for line in ranks[1]] == [1, 2]
    for line0, line1 in zip(*ranks):
        assert not set(line0["indices"]) & set(line1["indices"])  # disjoint rows
        for task in ("t2i", "mm2t"):
            assert line0[task]["seed"] != line1[task]["seed"]
            assert line0[task]["completions_sha256"] != line1[task]["completions_sha256"]

    # Metrics are over both ranks' rows: the logged mean equals the mean of the two ranks' rewards.
    header, rows = read_metrics(out / "metrics.jsonl")
    assert header["world_size"] == 2 and header["global_batch_prompts"] == 4
    for row, line0, line1 in zip(rows, *ranks):
        rewards = [r for r in line0["t2i"]["rewards"] + line1["t2i"]["rewards"] if r is not None]
        assert row["reward/t2i/mean"] == pytest.approx(sum(rewards) / len(rewards), rel=1e-5)


def processes_writing_to(folder: Path) -> list[int]:
    """PIDs of live processes whose command line names `folder` (the launcher and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State"))
            except (OSError, StopIteration):
                continue
            if str(folder) in cmdline and "zombie" not in state:
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(600)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_killed_two_process_run_resumes_to_the_uninterrupted_weights(tmp_path):
    model_dir = save_tiny_policy(tmp_path / "model")
    steps = ("train.max_steps=3", "train.save_steps=1", "train.save_total_limit=0")
    launch(model_dir, tmp_path / "whole", tmp_path, *steps)

    # The same run, its launcher killed once the first checkpoint exists (inside step 2 or 3).
    out = tmp_path / "killed"
    launcher = subprocess.Popen(launch_command(model_dir, out, *steps), cwd=REPO, env=launch_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (out / "checkpoint-1").is_dir() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=60)
    deadline = time.monotonic() + 30
    while processes_writing_to(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_writing_to(out), "workers outlived their killed launcher"
    assert (out / "checkpoint-1").is_dir() and not (out / "summary.json").exists()

    launch(model_dir, out, tmp_path, *steps, "--resume")
    whole = load_file(str(tmp_path / "whole" / "checkpoint-3" / "model.safetensors"))
    resumed = load_file(str(out / "checkpoint-3" / "model.safetensors"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    _, rows = read_metrics(out / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3]  # no step logged twice


@pytest.mark.timeout(300)
def test_two_machines_on_localhost_train_as_one_world(tmp_path):
    """The multi-node config with one process on each of two "machines" (machine_rank 0 and 1, the main
    one at 127.0.0.1): one world of 2 ranks that stay in sync."""
    model_dir = save_tiny_policy(tmp_path / "model")
    out, port = tmp_path / "run", str(free_port())
    machines = [
        subprocess.Popen(
            launch_command(model_dir, out, "train.max_steps=2", launcher=(
                "--config_file", str(recipes_dir() / "accelerate" / "ddp-multinode.yaml"), "--machine_rank",
                str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", port)),
            cwd=REPO, env=launch_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    logs = [machine.communicate(timeout=280)[0] for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True


def test_a_process_group_that_does_not_match_the_launch_is_refused(monkeypatch):
    """WORLD_SIZE says 2 but the process group has 1 rank: one clear error (build_accelerator runs this
    check before the run writes anything)."""
    from corl.training.setup import check_process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match=r"launcher started 2 processes .* process group of 1"):
        check_process_group(1)
    check_process_group(2)


def test_a_deepspeed_launch_is_refused_with_the_way_to_shard(monkeypatch, tmp_path):
    """DeepSpeed is not run by corl (never tested); its launch stops at once and names train.sharding=fsdp2."""
    from corl.training.setup import build_accelerator

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    cfg = tiny_config(save_tiny_policy(tmp_path / "model"))
    with pytest.raises(ValueError, match=r"asks for DeepSpeed, which corl does not run.*train.sharding=fsdp2"):
        build_accelerator(cfg)


@pytest.mark.timeout(300)
def test_an_accelerate_fsdp_config_stops_instead_of_running_as_ddp(tmp_path):
    """corl shards with train.sharding=fsdp2 under a plain launch; an accelerate FSDP config is refused
    with one clear line, before anything is written (on CPU it used to train as plain DDP without a word)."""
    model_dir = save_tiny_policy(tmp_path / "model")
    out = tmp_path / "run"
    fsdp = tmp_path / "fsdp.yaml"  # what accelerate's `config` wizard writes for FSDP on one machine
    fsdp.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_machines: 1\nmachine_rank: 0\n"
                    "num_processes: 2\nmixed_precision: 'no'\nuse_cpu: false\nfsdp_config:\n  fsdp_version: 2\n"
                    "  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
                    "  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer\n")
    command = launch_command(model_dir, out, launcher=(
        "--config_file", str(fsdp), "--main_process_port", str(free_port())))
    done = subprocess.run(command, check=False, cwd=REPO, env=launch_env(tmp_path), capture_output=True, text=True,
                          timeout=280)
    assert done.returncode != 0
    assert "the launch config asks accelerate for FSDP, but corl shards the model itself" in done.stderr
    assert not out.exists()


@pytest.mark.timeout(600)
def test_fsdp2_shards_trains_like_ddp_and_resumes_exactly(tmp_path):
    """train.sharding=fsdp2 under the same 2-process launch: each rank keeps half of the optimizer state,
    the weights after 2 steps equal DDP's up to float rounding, and a run resumed from its step-1
    checkpoint reaches the uninterrupted run's step-2 weights bit for bit."""
    model_dir = save_tiny_policy(tmp_path / "model")
    steps = ("train.max_steps=2", "train.save_steps=1", "train.save_total_limit=0")
    launch(model_dir, tmp_path / "ddp", tmp_path, *steps)
    launch(model_dir, tmp_path / "fsdp2", tmp_path, *steps, "train.sharding=fsdp2")

    ddp = load_file(str(tmp_path / "ddp" / "checkpoint-2" / "model.safetensors"))
    sharded = load_file(str(tmp_path / "fsdp2" / "checkpoint-2" / "model.safetensors"))
    before = load_file(str(model_dir / "model.safetensors"))
    assert ddp.keys() == sharded.keys()
    assert max(float((ddp[k] - before[k]).abs().max()) for k in ddp) > 1e-4  # the step did move the weights
    assert all(torch.allclose(ddp[k], sharded[k], rtol=0, atol=1e-6) for k in ddp)
    summary = json.loads((tmp_path / "fsdp2" / "summary.json").read_text())
    assert summary["world_size"] == 2

    # the AdamW moments are sharded: each rank holds about half of them
    trained = sum(v.numel() for k, v in before.items() if k.startswith(("model.language_model.", "lm_head.")))
    for rank in (0, 1):
        state = torch.load(tmp_path / "fsdp2" / "checkpoint-2" / f"optimizer_rank{rank}.pt", weights_only=True)
        held = sum(entry["exp_avg"].numel() for entry in state["state"].values())
        assert 0.4 * trained < held < 0.6 * trained

    cut = tmp_path / "cut"
    cut.mkdir()
    shutil.copytree(tmp_path / "fsdp2" / "checkpoint-1", cut / "checkpoint-1")
    shutil.copy(tmp_path / "fsdp2" / "config.yaml", cut / "config.yaml")
    launch(model_dir, cut, tmp_path, *steps, "train.sharding=fsdp2", "--resume")
    resumed = load_file(str(cut / "checkpoint-2" / "model.safetensors"))
    assert all(torch.equal(sharded[k], resumed[k]) for k in sharded)


@pytest.mark.timeout(300)
def test_fsdp2_with_bf16_compute_keeps_fp32_master_weights(tmp_path):
    """train.precision=bf16 over fp32 weights under fsdp2: the units gather bf16 weights for compute, the
    sharded fp32 master weights take the update, and the checkpoint holds fp32 weights that moved."""
    model_dir = save_tiny_policy(tmp_path / "model")
    out = tmp_path / "run"
    launch(model_dir, out, tmp_path, "train.sharding=fsdp2", "train.precision=bf16")
    header, rows = read_metrics(out / "metrics.jsonl")
    assert header["mixed_precision"] == "bf16" and header["param_dtype"] == "torch.float32"
    assert math.isfinite(rows[0]["grad_norm"]) and rows[0]["grad_norm"] > 0
    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(out / "checkpoint-1" / "model.safetensors"))
    layers = [k for k in before if k.startswith("model.language_model.layers.") and k.endswith("proj.weight")]
    assert all(after[k].dtype == torch.float32 and not torch.equal(before[k], after[k]) for k in layers)


def test_only_tested_accelerate_configs_are_shipped():
    assert sorted(p.stem for p in (recipes_dir() / "accelerate").glob("*.yaml")) == ["ddp", "ddp-multinode"]


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("ddp-multinode", "MULTI_GPU")])
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(recipes_dir() / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.num_machines == (2 if "multinode" in name else 1)
