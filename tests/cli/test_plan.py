"""`corl plan` on the shipped Janus recipes, and `corl train` refusing a run that cannot fit before it loads
or writes anything."""

from __future__ import annotations

import pytest
import torch

from corl.cli import main
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy

torch.set_num_threads(2)


@pytest.mark.parametrize("recipe", ["janus-pro-1b/paper/unified", "janus-pro-7b/paper/unified", "janus-pro-1b/paper/t2i",
                                    "janus-pro-1b/official/unified", "janus-pro-7b/official/mc",
                                    "janus-pro-1b/paper/mc", "janus-pro-1b/paper/oe", "janus-pro-7b/paper/t2i"])
def test_shipped_janus_recipes_fit_eight_80gb_gpus(recipe, capsys):
    assert main(["plan", recipe, "--gpus", "8", "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    assert "-> fits" in out and "8 x cuda of 80 GiB" in out
    for row in ("weights", "gradients", "optimizer states", "reference model", "reward models",
                "rollout KV cache", "update activations", "peak: update"):
        assert row in out, row


def test_plan_that_does_not_fit_exits_1_and_names_the_largest_update_chunk(capsys):
    assert main(["plan", "janus-pro-1b/paper/unified", "--gpus", "8", "--gpu-memory", "40"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "largest update chunk that fits: train.update_batch_size=" in out


def test_plan_without_memory_prints_the_table_only(capsys):
    assert main(["plan", "janus-pro-1b/paper/unified", "train.sharding=fsdp2", "--gpus", "4"]) == 0
    out = capsys.readouterr().out
    assert "FSDP2" in out and "/ 4 (sharded)" in out and "fits" not in out


def test_plan_rejects_bad_device_counts(capsys):
    assert main(["plan", "janus-pro-1b/paper/unified", "--gpus", "0"]) == 2
    assert "--gpus: must be >= 1" in capsys.readouterr().err


def test_train_refuses_a_run_that_cannot_fit_before_writing_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    model_dir = save_tiny_policy(tmp_path / "model")
    out = tmp_path / "run"
    # 2 x 100000 answers of up to 100000 tokens: a KV cache of terabytes
    huge = ["rollout.num_generations=100000", "rollout.max_completion_length=100000"]
    assert main(["train", "shapes-tiny/unified", "--out", str(out), f"model.name_or_path={model_dir}",
                 *TINY_OVERRIDES, *huge]) == 2
    err = capsys.readouterr().err
    assert "needs more memory per device than it has" in err and "does NOT fit" in err
    assert "rollout KV cache" in err and not out.exists()
