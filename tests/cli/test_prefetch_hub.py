"""`corl prefetch` against a stand-in Hugging Face hub on localhost, then `corl train` offline.

The stand-in serves the hub's API and file endpoints (what huggingface_hub's snapshot_download reads)
from local folders published under the real repo ids of the 1B paper recipe: a tiny Janus as
deepseek-community/Janus-Pro-1B, a tiny BLIP, a tiny 12-layer BERT as bert-base-uncased, and four rows in
the upstream layout as mm-vl/x2x_rft_22k. LPIPS's ImageNet backbone comes from download.pytorch.org, not
the hub, so the runs keep it random (reward_kwargs); its shipped linear heads are used."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("lpips", reason="the janus extra (pip install 'corl[janus]') is not installed")

REPO = Path(__file__).resolve().parents[2]
SHA = "c" * 40
RANDOM_BACKBONE = "rewards.reward_kwargs={cycle: {visual_options: {pretrained_backbone: false}}}"


class StandInHub(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of /api/{models,datasets}/REPO[/revision/R | /tree/R] and /[datasets/]REPO/resolve/R/FILE."""

    root: Path

    def log_message(self, *args) -> None:
        pass

    def _reply(self, body: bytes, head: bool, **headers: str) -> None:
        self.send_response(200)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = self.path.split("?")[0]
        api = re.match(r"^/api/(models|datasets)/(.+?)(/revision/[^/]+|/tree/.*)?$", path)
        resolve = re.match(r"^/(datasets/)?(.+?)/resolve/[^/]+/(.+)$", path)
        if api and (self.root / api.group(1) / api.group(2)).is_dir():
            folder = self.root / api.group(1) / api.group(2)
            files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            if (api.group(3) or "").startswith("/tree/"):
                listing = [{"type": "file", "path": f, "size": (folder / f).stat().st_size,
                            "oid": hashlib.sha1((folder / f).read_bytes()).hexdigest()} for f in files]
            else:
                listing = {"id": api.group(2), "sha": SHA, "siblings": [
                    {"rfilename": f, "size": (folder / f).stat().st_size} for f in files]}
            return self._reply(json.dumps(listing).encode(), head, **{"Content-Type": "application/json"})
        if resolve:
            file = self.root / ("datasets" if resolve.group(1) else "models") / resolve.group(2) / resolve.group(3)
            if file.is_file():
                data = file.read_bytes()
                return self._reply(data, head, **{"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'})
        self.send_response(404)
        self.end_headers()

    def do_GET(self) -> None:
        self._serve(False)

    def do_HEAD(self) -> None:
        self._serve(True)


def publish(root: Path) -> None:
    """The 1B paper recipe's unified-stage repos, as tiny stand-ins."""
    import datasets
    from PIL import Image

    from corl.rewards.testing import save_tiny_bert, save_tiny_blip
    from corl.training.testing import save_tiny_policy

    save_tiny_policy(root / "models/deepseek-community/Janus-Pro-1B")
    save_tiny_blip(root / "models/Salesforce/blip-image-captioning-base")
    save_tiny_bert(root / "models/bert-base-uncased", num_layers=12)
    rows = {"prompt": ["a red circle", "two blue squares", "a green triangle", "one yellow square"],
            "real_image": [Image.new("RGB", (32, 32), c) for c in ((220, 30, 30), (30, 30, 220), (30, 180, 30),
                                                                  (230, 220, 40))],
            "qa_problem": ["What color is it?\nA. red\nB. blue"] * 4, "qa_solution": ["<answer>A</answer>"] * 4,
            "qa_type": ["MC"] * 4}
    folder = root / "datasets/mm-vl/x2x_rft_22k/data"
    folder.mkdir(parents=True)
    features = datasets.Features({"prompt": datasets.Value("string"), "real_image": datasets.Image(),
                                  "qa_problem": datasets.Value("string"), "qa_solution": datasets.Value("string"),
                                  "qa_type": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))


def corl(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corl.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1500)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_prefetch_from_a_stand_in_hub_then_train_offline(tmp_path):
    publish(tmp_path / "hub")
    StandInHub.root = tmp_path / "hub"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
           "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "CORL_CACHE": str(tmp_path / "corl"),
           "OMP_NUM_THREADS": "2"}
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    try:
        refused = corl("train", "janus-pro-1b/paper/unified", "--out", str(tmp_path / "run"), RANDOM_BACKBONE,
                       env=offline)
        assert refused.returncode == 2 and "4 download(s)" in refused.stderr, refused.stderr[-2000:]
        fetched = corl("prefetch", "janus-pro-1b/paper/unified", RANDOM_BACKBONE, env=env)
        assert fetched.returncode == 0 and "4 of 4 assets cached" in fetched.stdout, fetched.stdout + fetched.stderr
        trained = corl("train", "janus-pro-1b/paper/unified", "--out", str(tmp_path / "run"), RANDOM_BACKBONE,
                       "train.max_steps=1", env=offline)
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert (tmp_path / "run" / "checkpoint-1" / "model.safetensors").is_file()
    finally:
        server.shutdown()
