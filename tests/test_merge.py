"""corl.merge: linear and Gaussian merging of save_pretrained checkpoints (tiny random Llama models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from corl.merge import (
    RECORD_FILE,
    Checkpoint,
    average_tensors,
    gaussian_band,
    gaussian_merge_tensors,
    merge_checkpoints,
)

torch.set_num_threads(2)


def tiny_llama(folder: Path, seed: int, **save_kwargs) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    LlamaForCausalLM(config).save_pretrained(folder, **save_kwargs)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    (folder / "optimizer.pt").write_bytes(b"not copied")
    return folder


def refined_from(base: Path, folder: Path, seed: int, scale: float = 0.01, spike: float = 0.0) -> Path:
    """A copy of `base` with small random task-vector noise, and optionally one large update per matrix."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn(param.shape, generator=gen))
            if spike and param.dim() == 2:
                param.view(-1)[seed % param.numel()] += spike
    model.save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    return folder


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge")
    base = tiny_llama(root / "base", seed=0)
    return {
        "base": base,
        "a": refined_from(base, root / "a", seed=1, spike=0.5),
        "b": refined_from(base, root / "b", seed=2, spike=0.5),
    }


# ---- math --------------------------------------------------------------------------------------


def test_average_tensors_is_linear_interpolation():
    a, b = torch.tensor([1.0, 2.0, -4.0]), torch.tensor([3.0, 6.0, 4.0])
    assert torch.allclose(average_tensors(a, b, 0.5), torch.tensor([2.0, 4.0, 0.0]))
    assert torch.allclose(average_tensors(a, b, 0.25), torch.tensor([2.5, 5.0, 2.0]))
    assert torch.equal(average_tensors(a, b, 1.0), a)


def test_gaussian_merge_averages_the_bulk_and_keeps_outliers_whole():
    base = torch.zeros(8)
    d_a = torch.tensor([0.1, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1, 5.0])  # one salient update at index 7
    d_b = torch.tensor([-0.1, 0.1, -0.1, 0.1, -0.1, 0.1, -0.1, 0.1])
    centre, half = gaussian_band(d_a, d_b, lam=2.0)
    # Hand-computed: means 0.6125 / 0.0 -> centre 0.30625; stds 1.80... / 0.1069 -> half = 2 * 0.1069.
    assert centre.item() == pytest.approx((d_a.mean().item() + d_b.mean().item()) / 2)
    assert half.item() == pytest.approx(2 * d_b.std().item())
    merged, inside = gaussian_merge_tensors(base + d_a, base + d_b, base, alpha=0.5, lam=2.0)
    inside_a = (d_a > centre - half) & (d_a < centre + half)
    inside_b = (d_b > centre - half) & (d_b < centre + half)
    expected = torch.where(inside_a, 0.5, 1.0) * d_a + torch.where(inside_b, 0.5, 1.0) * d_b
    assert torch.allclose(merged, expected)
    assert merged[7].item() == pytest.approx(5.0 + 0.5 * 0.1 if inside_b[7] else 5.1)  # spike survives whole
    assert not inside_a[7]
    assert inside == pytest.approx((inside_a.sum() + inside_b.sum()).item() / 16)


def test_gaussian_merge_with_wide_band_is_plain_average():
    torch.manual_seed(0)
    base, a, b = torch.randn(50), torch.randn(50), torch.randn(50)
    merged, inside = gaussian_merge_tensors(a, b, base, alpha=0.3, lam=1e6)
    assert inside == 1.0
    assert torch.allclose(merged, 0.3 * a + 0.7 * b, atol=1e-6)


def test_gaussian_merge_of_frozen_tensor_returns_base():
    base = torch.randn(4, 4)
    merged, _ = gaussian_merge_tensors(base.clone(), base.clone(), base)
    assert torch.equal(merged, base)


# ---- directories -------------------------------------------------------------------------------


def test_average_merge_numerics_and_loading(models, tmp_path):
    from transformers import LlamaForCausalLM

    out = tmp_path / "avg"
    report = merge_checkpoints(models["a"], models["b"], out, method="average", alpha=0.25)
    wa, wb, wm = weights(models["a"]), weights(models["b"]), weights(out)
    assert set(wm) == set(wa)
    for key in wa:
        assert torch.allclose(wm[key], 0.25 * wa[key] + 0.75 * wb[key], atol=1e-6), key
    assert report.n_tensors == len(wa)
    assert {"config.json", "generation_config.json", "tokenizer_config.json"} <= set(report.copied_files)
    assert not (out / "optimizer.pt").exists() and (out / "tokenizer_config.json").is_file()
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["method"] == "average" and record["alpha"] == 0.25
    model = LlamaForCausalLM.from_pretrained(out)
    sd = model.state_dict()
    assert torch.allclose(sd["model.layers.0.mlp.up_proj.weight"], wm["model.layers.0.mlp.up_proj.weight"])
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    assert not list(tmp_path.glob(".avg.tmp-*"))  # temporary directory renamed away


def test_gaussian_merge_matches_per_tensor_rule(models, tmp_path):
    from transformers import LlamaForCausalLM

    out = tmp_path / "gauss"
    report = merge_checkpoints(models["a"], models["b"], out, method="gaussian", base=models["base"])
    wa, wb, w0, wm = weights(models["a"]), weights(models["b"]), weights(models["base"]), weights(out)
    for key in wa:
        expected, _ = gaussian_merge_tensors(wa[key], wb[key], w0[key])
        assert torch.allclose(wm[key], expected, atol=1e-6), key
    # The planted spikes (0.5 >> noise 0.01) are outside the band: kept whole, not halved.
    key = "model.layers.0.mlp.up_proj.weight"
    spike_a = 1 % wa[key].numel()
    delta = (wm[key] - w0[key]).view(-1)[spike_a]
    assert delta.item() == pytest.approx(0.5, abs=0.05)
    avg_delta = (0.5 * (wa[key] + wb[key]) - w0[key]).view(-1)[spike_a]
    assert avg_delta.item() == pytest.approx(0.25, abs=0.05)
    assert 0.5 < report.inside_fraction < 1.0
    LlamaForCausalLM.from_pretrained(out)


def test_sharded_checkpoints_keep_layout(tmp_path):
    a = tiny_llama(tmp_path / "a", seed=1, max_shard_size="10KB")
    b = tiny_llama(tmp_path / "b", seed=2, max_shard_size="10KB")
    assert (a / "model.safetensors.index.json").is_file()
    out = tmp_path / "m"
    merge_checkpoints(a, b, out)
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(
        p.name for p in a.glob("*.safetensors")
    )
    assert Checkpoint(out).weight_map == Checkpoint(a).weight_map
    wa, wb, wm = weights(a), weights(b), weights(out)
    for key in wa:
        assert torch.allclose(wm[key], 0.5 * (wa[key] + wb[key]), atol=1e-6)


def test_mismatched_keys_and_shapes_are_refused(models, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    tensors = weights(models["b"])
    tensors.pop("model.norm.weight")
    tensors["model.embed_tokens.weight"] = torch.zeros(3, 16)
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing from B: model\.norm\.weight.*shape mismatches"):
        merge_checkpoints(models["a"], bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_argument_errors(models, tmp_path):
    with pytest.raises(ValueError, match="needs --base"):
        merge_checkpoints(models["a"], models["b"], tmp_path / "o", method="gaussian")
    with pytest.raises(ValueError, match="alpha"):
        merge_checkpoints(models["a"], models["b"], tmp_path / "o", alpha=1.5)
    with pytest.raises(ValueError, match="unknown merge method"):
        merge_checkpoints(models["a"], models["b"], tmp_path / "o", method="ties")
    existing = tmp_path / "exists"
    existing.mkdir()
    with pytest.raises(ValueError, match="already exists"):
        merge_checkpoints(models["a"], models["b"], existing)
    no_weights = tmp_path / "empty"
    no_weights.mkdir()
    (no_weights / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="safe_serialization"):
        merge_checkpoints(models["a"], no_weights, tmp_path / "o")


def test_overwrite_replaces_existing_output(models, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    merge_checkpoints(models["a"], models["b"], out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()


def run_cli(argv: list[str]) -> int:
    """Parse with the merge command's own `register` (independent of the other subsystems' commands)."""
    import argparse

    from corl import cli
    from corl.cli import merge as merge_command

    assert "corl.cli.merge" in cli.COMMAND_MODULES
    parser = argparse.ArgumentParser(prog="corl")
    merge_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_merge(models, tmp_path, capsys):
    out = tmp_path / "cli"
    code = run_cli(
        [
            "merge",
            "--a",
            str(models["a"]),
            "--b",
            str(models["b"]),
            "--base",
            str(models["base"]),
            "--method",
            "gaussian",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "averaged" in capsys.readouterr().out
    assert json.loads((out / RECORD_FILE).read_text())["method"] == "gaussian"
    with pytest.raises(ValueError, match="needs --base"):
        run_cli(
            [
                "merge",
                "--a",
                str(models["a"]),
                "--b",
                str(models["b"]),
                "--method",
                "gaussian",
                "--out",
                str(tmp_path / "x"),
            ]
        )


def test_cli_merge_takes_the_shapes_base_alias(tmp_path, capsys):
    """'shapes-base' names the Shapes base model in merge as it does in --model and recipes."""
    out = tmp_path / "alias"
    assert run_cli(["merge", "--a", "shapes-base", "--b", "shapes-base", "--alpha", "0.3", "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and "merged" in capsys.readouterr().out


def test_cli_merge_says_its_result_once(models, tmp_path, capsys, caplog):
    """The command prints the result; the library does not announce it a second time in the log."""
    with caplog.at_level("INFO", logger="corl.merge"):
        assert run_cli(["merge", "--a", str(models["a"]), "--b", str(models["b"]), "--out", str(tmp_path / "m")]) == 0
    assert capsys.readouterr().out.count("merged ") == 1
    assert not [r for r in caplog.records if r.levelname == "INFO" and "merged" in r.getMessage()]
