"""`corl train`: overrides before or after options, a stage started from another stage's final
checkpoint (how the demo chains unified -> refined), and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from corl.cli import build_parser, main
from corl.config import load_config
from corl.trainer import train
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy, tiny_config

torch.set_num_threads(2)


def test_parser_takes_overrides_anywhere():
    parser = build_parser()
    args = parser.parse_args(["train", "shapes-tiny/t2i", "--out", "o", "grpo.beta=0.1", "seed=3"])
    assert (args.recipe, args.overrides, args.out, args.resume) == ("shapes-tiny/t2i", ["grpo.beta=0.1", "seed=3"],
                                                                     Path("o"), False)
    args = parser.parse_args(["train", "shapes-tiny/t2i", "--resume", "seed=3", "--out", "o"])
    assert args.overrides == ["seed=3"] and args.resume and args.resume_from is None  # --resume takes no value
    assert parser.parse_args(["train", "r", "--out", "o", "--resume-from", "ck"]).resume_from == Path("ck")


def test_cli_runs_a_refined_stage_from_a_unified_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CORL_CACHE", str(tmp_path / "cache"))
    model_dir = save_tiny_policy(tmp_path / "model")
    first = train(tiny_config(model_dir, "unified"), tmp_path / "unified")
    out = tmp_path / "t2i"
    code = main(["train", "shapes-tiny/t2i", "--out", str(out), f"model.name_or_path={first.final_checkpoint}",
                 *TINY_OVERRIDES])
    assert code == 0
    assert load_config(out / "config.yaml").model.name_or_path == str(first.final_checkpoint)
    start = load_file(str(first.final_checkpoint / "model.safetensors"))
    end = load_file(str(out / "checkpoint-1" / "model.safetensors"))
    key = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(start[key], end[key])
    assert json.loads((out / "summary.json").read_text())["stage"] == "t2i"
    assert "final checkpoint:" in capsys.readouterr().out
    # A second fresh run into the same directory is refused with one clear line.
    assert main(["train", "shapes-tiny/t2i", "--out", str(out), f"model.name_or_path={first.final_checkpoint}",
                 *TINY_OVERRIDES]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_unknown_recipe_and_bad_override_are_clear_errors(capsys):
    assert main(["train", "no/such", "--out", "o"]) == 2
    assert "no recipe 'no/such'" in capsys.readouterr().err
    assert main(["train", "shapes-tiny/t2i", "--out", "o", "grpo.betta=1"]) == 2
    assert "unknown config key 'grpo.betta'" in capsys.readouterr().err
