"""What a recipe downloads, cache detection, the preflight of `corl train` and `corl prefetch`'s plumbing
(downloads replaced by fakes that write the same cache layout: no network here)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from corl.cli import main
from corl.config import load_config, resolve_recipe
from corl.training import assets as assets_module
from corl.training.assets import LPIPS_BACKBONES, Asset, assets_of, missing_assets

PAPER_UNIFIED = ["deepseek-community/Janus-Pro-1B", "mm-vl/x2x_rft_22k", "Salesforce/blip-image-captioning-base",
                 "bert-base-uncased", LPIPS_BACKBONES["vgg"]]


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Empty Hugging Face and torch hub caches, offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path
    torch.hub.set_dir(previous)


def fake_snapshot(repo_id: str, repo_type: str = "model", **kwargs) -> str:
    """What snapshot_download leaves in the cache, minus the real files."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots" / ("0" * 40)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("config.json" if repo_type == "model" else "train.parquet")).write_text("{}")
    return str(folder)


def test_assets_of_the_janus_recipes():
    names = [a.name for a in assets_of(load_config(resolve_recipe("janus-pro-1b/paper/unified")))]
    assert names == PAPER_UNIFIED
    mc = assets_of(load_config(resolve_recipe("janus-pro-1b/official/mc")))
    assert [a.name for a in mc] == ["deepseek-community/Janus-Pro-1B", "mm-vl/mcot_r1_mcq_66k"]  # no t2i reward
    assert assets_of(load_config(resolve_recipe("shapes-tiny/unified"))) == []
    alex = load_config(resolve_recipe("janus-pro-1b/paper/t2i"), ["rewards.lpips_net=alex"])
    assert LPIPS_BACKBONES["alex"] in [a.name for a in assets_of(alex)]


def test_local_paths_are_not_assets(tmp_path):
    cfg = load_config(resolve_recipe("janus-pro-1b/paper/mc"), [f"model.name_or_path={tmp_path}",
                                                                f"data.source={tmp_path}"])
    assert assets_of(cfg) == []


def test_cache_detection(empty_caches):
    model, dataset = Asset("model", "org/m", "x"), Asset("dataset", "org/d", "y")
    url = Asset("url", LPIPS_BACKBONES["vgg"], "z")
    assert not (model.cached() or dataset.cached() or url.cached())
    fake_snapshot("org/m")
    fake_snapshot("org/d", "dataset")
    url.checkpoint_path.parent.mkdir(parents=True)
    url.checkpoint_path.write_bytes(b"w")
    assert model.cached() and dataset.cached() and url.cached()
    assert not model.reachable()  # HF_HUB_OFFLINE=1


def test_train_offline_with_empty_caches_lists_every_missing_asset_at_once(empty_caches, capsys):
    out = empty_caches / "run"
    start = time.perf_counter()
    assert main(["train", "janus-pro-1b/paper/unified", "--out", str(out)]) == 2
    assert time.perf_counter() - start < 30
    err = capsys.readouterr().err
    assert "5 download(s) this run needs are neither cached nor reachable" in err and "corl prefetch" in err
    for name in PAPER_UNIFIED:
        assert name in err
    assert not out.exists()


def test_prefetch_fetches_each_missing_asset_once_then_the_preflight_passes(empty_caches, monkeypatch, capsys):
    import huggingface_hub

    fetched = []

    def snapshot(repo_id, repo_type="model", **kwargs):
        fetched.append(repo_id)
        return fake_snapshot(repo_id, repo_type)

    def download(url, path, progress=True):
        fetched.append(url)
        Path(path).write_bytes(b"weights")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(assets_module.Asset, "size", lambda self: None)
    assert main(["prefetch", "janus-pro-1b/paper"]) == 0  # the whole family: four stages
    assert sorted(fetched) == sorted(set(fetched))  # the shared model and backbones once
    assert set(PAPER_UNIFIED) <= set(fetched) and "mm-vl/mcot_r1_vqa_66k" in fetched
    assert "8 of 8 assets cached" in capsys.readouterr().out
    assert missing_assets(load_config(resolve_recipe("janus-pro-1b/paper/unified"))) == []
    assert main(["prefetch", "janus-pro-1b/paper/unified"]) == 0  # everything cached: nothing fetched again
    assert len(fetched) == 8


def test_eval_offline_names_the_missing_model_and_benchmark_before_loading(empty_caches, capsys):
    out = empty_caches / "results.json"
    assert main(["eval", "--model", "org/some-janus", "--suite", "benchmark", "--recipe", "mmstar",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "2 download(s)" in err and "org/some-janus" in err and "Lin-Chen/MMStar" in err
    assert not out.exists()
