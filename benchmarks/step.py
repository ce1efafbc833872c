"""One GRPO step of each stage, broken down by stage: seconds and peak memory, through the trainer.

    .venv/bin/python benchmarks/step.py [--stages unified,t2i,mc,oe] [--steps 2] [--threads 2]
        [--model-path DIR] [--slow] [--device cpu|cuda] [--set key=value ...]

Each stage runs `corl.trainer.train` on its shipped shapes-tiny recipe (`recipes/shapes-tiny/<stage>.yaml`:
G = 8, 4 prompts per step, answers up to 32 tokens, the offline reward backends) for `--steps` optimizer
steps into a temporary directory, and reads the trainer's own per-stage timing from metrics.jsonl:
time/{image_rollout, text_rollout, rewards, logps, update} and time/step. The last step is reported
(the first pays one-off costs); `--steps 1` reports the first.

Memory: the benchmark swaps the trainer's `StageTimer` for a subclass that also records, per stage, the
peak resident set size of the process (a thread samples /proc/self/statm every 2 ms; on CPU torch
tensors live in malloc'd memory that tracemalloc does not see) and, on CUDA, the peak of
torch.cuda.max_memory_allocated. "rss" is the process total at the stage's peak (weights, optimizer
state, datasets and reward models included), so compare stages by how far they rise above the rest.

Models: the Shapes base checkpoint (`corl.policy.default_model_path()`) when it exists; otherwise a
random-weight stand-in at its sizes with the Shapes vocabulary, saved to the temporary directory.
`--slow`: a Janus-Pro-1B-shaped model with random weights (JANUS_PRO_1B), saved there first (8 GB in
fp32); meant for a GPU (`--device cuda`), since one step samples 576 codes per image (hours on a CPU).
`--model-path` uses any saved Janus checkpoint instead. `--set key=value` passes config overrides.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corl import trainer as trainer_module
from corl.config import load_config
from corl.config import resolve_recipe
from corl.training.tracking import StageTimer

STAGES = ("unified", "t2i", "mc", "oe")
PARTS = ("image_rollout", "text_rollout", "rewards", "logps", "update")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------- memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


class PeakSampler:
    """Samples the process RSS every `interval` seconds in a thread; `peak` since the last reset."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def reset(self) -> None:
        self.peak = rss_bytes()

    def read(self) -> int:
        self.peak = max(self.peak, rss_bytes())
        return self.peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class MeasuredStageTimer(StageTimer):
    """The trainer's StageTimer plus peak memory per stage; `history` holds one dict per `pop()` (step)."""

    sampler: ClassVar[PeakSampler | None] = None
    history: ClassVar[list[dict[str, dict[str, float]]]] = []

    def __init__(self, sync_cuda: bool = False) -> None:
        super().__init__(sync_cuda)
        self.memory: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        cuda = torch.cuda.is_available() and self.sync_cuda
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.sampler.reset()
        start = rss_bytes()
        with super().__call__(name):
            yield
        entry = self.memory.setdefault(name, {"rss": 0.0, "rise": 0.0})
        peak = self.sampler.read()
        entry["rss"] = max(entry["rss"], peak)
        entry["rise"] = max(entry["rise"], peak - start)
        if cuda:
            entry["cuda"] = max(entry.get("cuda", 0.0), float(torch.cuda.max_memory_allocated()))

    def pop(self) -> dict[str, float]:
        type(self).history.append(self.memory)
        self.memory = {}
        return super().pop()


# --------------------------------------------------------------------------------------- models


def shapes_stand_in(directory: Path) -> Path:
    """Random weights at the Shapes base sizes with the Shapes vocabulary, saved to `directory`."""
    from corl.policy import JanusPolicy, save_policy
    from corl.policy.architecture import build_janus
    from corl.policy.tokenizer import build_processor, build_tokenizer
    from corl.basemodel.pipeline import shapes_base_sizes, shapes_vocabulary

    sizes = shapes_base_sizes()
    tokenizer = build_tokenizer(shapes_vocabulary(300))
    processor = build_processor(tokenizer, sizes.image_size, patch_size=sizes.patch_size)
    torch.manual_seed(0)
    save_policy(JanusPolicy(build_janus(sizes, tokenizer), processor), directory)
    return directory


def janus_1b_stand_in(directory: Path, dtype: torch.dtype) -> Path:
    """Random weights at Janus-Pro-1B's sizes with the Shapes vocabulary (vocab padded to 102400)."""
    from corl.policy import JanusPolicy, save_policy
    from corl.policy.architecture import JANUS_PRO_1B, build_janus
    from corl.policy.tokenizer import build_processor, build_tokenizer
    from corl.basemodel.pipeline import shapes_vocabulary

    tokenizer = build_tokenizer(shapes_vocabulary(300))
    processor = build_processor(tokenizer, JANUS_PRO_1B.image_size, patch_size=JANUS_PRO_1B.patch_size)
    torch.manual_seed(0)
    save_policy(JanusPolicy(build_janus(JANUS_PRO_1B, tokenizer).to(dtype), processor), directory)
    return directory


def resolve_model(args: argparse.Namespace, scratch: Path) -> tuple[str, str]:
    if args.model_path:
        return args.model_path, f"checkpoint {args.model_path}"
    if args.slow:
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        path = janus_1b_stand_in(scratch / "janus-1b-shaped", dtype)
        return str(path), f"Janus-Pro-1B-shaped random weights ({dtype}), saved to {path}"
    try:
        from corl.policy import default_model_path

        path = default_model_path()
        return str(path), f"Shapes base checkpoint {path}"
    except FileNotFoundError:
        path = shapes_stand_in(scratch / "shapes-stand-in")
        return str(path), "random-weight stand-in at the Shapes base sizes (no Shapes base checkpoint yet)"


# ----------------------------------------------------------------------------------------- runs


def stage_config(stage: str, model: str, args: argparse.Namespace):
    overrides = [
        f"model.name_or_path={model}",
        f"model.device={args.device}",
        "data.source=shapes",
        "data.shapes_n_train=64",
        "data.shapes_n_test=8",
        f"train.max_steps={args.steps}",
        "train.logging_steps=1",
        "train.sample_steps=0",
        "train.eval_steps=0",
        *args.set,
    ]
    if args.slow:
        overrides.append("data.shapes_image_size=384")
    return load_config(resolve_recipe(f"shapes-tiny/{stage}"), overrides)


def run_stage(stage: str, model: str, args: argparse.Namespace, scratch: Path) -> dict:
    cfg = stage_config(stage, model, args)
    MeasuredStageTimer.history = []
    start = time.perf_counter()
    trainer_module.train(cfg, scratch / f"run-{stage}")
    wall = time.perf_counter() - start
    rows = [
        json.loads(line) for line in (scratch / f"run-{stage}" / "metrics.jsonl").read_text().splitlines()
    ]
    rows = [row for row in rows if "step" in row and "time/step" in row]
    last = rows[-1]
    memory = MeasuredStageTimer.history[-1] if MeasuredStageTimer.history else {}
    return {
        "stage": stage,
        "step": last["step"],
        "times": {part: last.get(f"time/{part}", 0.0) for part in (*PARTS, "step")},
        "memory": memory,
        "wall": wall,
        "rows": cfg.train.per_device_batch_size,
        "group": cfg.rollout.num_generations,
        "beta": cfg.grpo.beta,
    }


def print_table(results: list[dict], device: str) -> None:
    gib = 2**30
    head = f"{'stage':8s} " + " ".join(f"{p:>14s}" for p in (*PARTS, "step"))
    print("\nseconds per stage (the trainer's time/* of the reported step)")
    print(head)
    for r in results:
        print(f"{r['stage']:8s} " + " ".join(f"{r['times'][p]:14.3f}" for p in (*PARTS, "step")))
    print(
        "\npeak process RSS during each stage, GiB, + its rise above the RSS at the stage's start"
        + (" [CUDA max allocated, GiB]" if device != "cpu" else "")
    )
    print(f"{'stage':8s} " + " ".join(f"{p:>14s}" for p in PARTS))
    for r in results:
        cells = []
        for part in PARTS:
            entry = r["memory"].get(part)
            if entry is None:
                cells.append(f"{'-':>14s}")
            else:
                cell = f"{entry['rss'] / gib:.2f} +{entry['rise'] / gib:.2f}"
                if "cuda" in entry:
                    cell += f" [{entry['cuda'] / gib:.2f}]"
                cells.append(f"{cell:>14s}")
        print(f"{r['stage']:8s} " + " ".join(cells))


def logps_memory(args: argparse.Namespace) -> None:
    """Peak memory and time of image log-probs at the Janus-Pro-1B head (2048 -> 16384 codes): the
    generation head + CFG + log-softmax over N = 576 positions of random LLM states, chunked (corl's
    default, `train.logits_chunk_mb` = corl.config.LOGITS_CHUNK_MB) vs in one piece, without grad
    (pi_old / pi_ref) and with grad."""
    from types import SimpleNamespace

    from transformers import JanusVQVAEConfig
    from transformers.models.janus.modeling_janus import JanusVQVAEHead

    from corl.config import LOGITS_CHUNK_MB
    from corl.policy import scoring

    torch.manual_seed(0)
    head = JanusVQVAEHead(
        JanusVQVAEConfig(num_embeddings=16384, projection_dim=2048, image_token_embed_dim=2048)
    )
    policy = SimpleNamespace(model=SimpleNamespace(model=SimpleNamespace(generation_head=head)))
    rows, positions = args.logps_rows, 576  # rows = images; the head sees 2 x rows (CFG)
    hidden = torch.randn(2 * rows, positions, 2048)
    targets = torch.randint(0, 16384, (rows, positions))
    sampler = PeakSampler()
    print(f"\nimage log-probs at the 1B head: {rows} images (x2 CFG rows) x {positions} codes x 16384")
    for grad in (False, True):
        for label, chunk_mb in (("one piece", 1 << 40), ("chunked", LOGITS_CHUNK_MB)):
            states = hidden.clone().requires_grad_(grad)
            base = rss_bytes()
            sampler.reset()
            start = time.perf_counter()
            with torch.set_grad_enabled(grad):
                logps, entropy = scoring._chunked_score(
                    lambda h: scoring._image_head(policy, h, 5.0), states, targets, 1.0, True, 16384,
                    chunk_mb,
                )
                if grad:
                    logps.sum().backward()
            seconds = time.perf_counter() - start
            peak = sampler.read() - base
            print(
                f"   {'with grad' if grad else 'no grad  '} {label:9s}: peak +{peak / 2**30:.2f} GiB over the "
                f"inputs, {seconds:.1f}s"
            )
            del logps, entropy, states
    sampler.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument(
        "--steps", type=int, default=2, help="optimizer steps per stage; the last is reported"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-path", default=None, help="a saved Janus checkpoint to use instead")
    parser.add_argument("--slow", action="store_true", help="the Janus-Pro-1B-shaped model (GPU)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--logps-memory", action="store_true", help="only the chunked log-prob measurement")
    parser.add_argument("--logps-rows", type=int, default=8, help="images for --logps-memory")
    args = parser.parse_args(argv)
    if args.logps_memory:
        torch.set_num_threads(args.threads)
        logps_memory(args)
        return 0
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stages {unknown}; choose from {list(STAGES)}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.slow and args.device == "cpu":
        print("warning: --slow on CPU samples 576 codes per image per step: expect hours per stage")

    sampler = PeakSampler()
    MeasuredStageTimer.sampler = sampler
    trainer_module.StageTimer = MeasuredStageTimer  # the trainer builds its timer from this name
    results = []
    with tempfile.TemporaryDirectory(prefix="corl-step-") as tmp:
        scratch = Path(tmp)
        os.environ.setdefault("CORL_CACHE", str(scratch / "cache"))  # the Shapes rows are built here
        model, source = resolve_model(args, scratch)
        print(f"model: {source}; device {args.device}, {torch.get_num_threads()} threads")
        for stage in stages:
            result = run_stage(stage, model, args, scratch)
            results.append(result)
            print(
                f"{stage}: step {result['step']} of {args.steps}, B = {result['rows']} prompts x G = "
                f"{result['group']}, beta {result['beta']}; {result['times']['step']:.2f}s "
                f"(whole run incl. setup and checkpoint {result['wall']:.1f}s)",
                flush=True,
            )
    sampler.close()
    print_table(results, args.device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nprocess peak RSS (ru_maxrss) over the whole benchmark: {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
