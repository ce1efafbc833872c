"""Two CPU processes (gloo) through `accelerate launch` with the shipped DDP config: the same `corl train`
command trains in sync (identical parameters on both ranks afterwards, and they did change), each rank
draws different rows and different rollouts, and the logged metrics are gathered over both ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from corl.config import recipes_dir
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy
from corl.training.tracking import read_metrics

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_processes_train_in_sync_on_different_samples(tmp_path):
    model_dir = save_tiny_policy(tmp_path / "model")
    out = tmp_path / "run"
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        str(accelerate), "launch", "--config_file", str(recipes_dir() / "accelerate" / "ddp.yaml"),
        "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "corl.cli",
        "train", "shapes-tiny/unified", "--out", str(out), f"model.name_or_path={model_dir}", *TINY_OVERRIDES,
        "train.max_steps=2", "train.log_rollouts=true",
    ]
    env = {**os.environ, "CORL_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

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


@pytest.mark.parametrize("name, kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("zero2", "DEEPSPEED"),
                                        ("zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_parse(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(recipes_dir() / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind and config.num_machines == 1
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
        assert config.deepspeed_config["gradient_accumulation_steps"] == 1  # corl accumulates by hand
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_use_orig_params"] is True  # only part of the model trains
