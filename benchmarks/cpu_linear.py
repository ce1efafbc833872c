"""float32 CPU linears: PyTorch's `F.linear` (MKL) against oneDNN (`corl.generation.cpu_linear`), side by side.

    .venv/bin/python benchmarks/cpu_linear.py [--threads 2] [--calls 30]

One line per shape (rows x in -> out, as in a decode step: 32 rows = 16 images with CFG), both timed in
the same process, alternating, median of 5 rounds of `--calls` calls; the ratio aten / oneDNN last. Shows
whether the threshold `DecodingConfig.onednn_min_macs` (recipe key `rollout.decoding.onednn_min_macs`)
suits this machine (MKL does not use AVX-512 on AMD CPUs; on Intel ones the two may be close).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corl.config import DecodingConfig
from corl.generation import cpu_linear

SHAPES = [  # (rows, in, out)
    (32, 128, 384),  # Shapes model: MLP up projection
    (32, 256, 768),
    (32, 512, 1536),
    (32, 2048, 2048),  # Janus-Pro-1B: attention projections
    (32, 2048, 5632),  # Janus-Pro-1B: MLP gate / up
    (32, 2048, 16384),  # Janus-Pro-1B: image generation head
    (16, 4096, 11008),  # Janus-Pro-7B: MLP gate / up, 8 images
]


def seconds_per_call(fn: Callable[[], torch.Tensor], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)
    if not cpu_linear.onednn_linear_supported():
        print("oneDNN's linear is not available in this PyTorch build / on this CPU")
        return 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    threshold = DecodingConfig().onednn_min_macs
    print(f"{torch.get_num_threads()} threads; default threshold DecodingConfig.onednn_min_macs = {threshold}")
    with torch.inference_mode():
        for rows, fan_in, fan_out in SHAPES:
            inputs, weight = torch.randn(rows, fan_in), torch.randn(fan_out, fan_in)
            loops = {
                "aten": lambda: F.linear(inputs, weight),
                "onednn": lambda: cpu_linear.onednn_linear(inputs, weight),
            }
            for fn in loops.values():
                fn()  # warm-up
            times: dict[str, list[float]] = {key: [] for key in loops}
            for repeat in range(5):
                for key in loops if repeat % 2 == 0 else reversed(loops):
                    times[key].append(seconds_per_call(loops[key], args.calls))
            aten, onednn = (statistics.median(times[key]) for key in ("aten", "onednn"))
            macs = rows * fan_in * fan_out
            print(
                f"{rows:3d} x {fan_in:5d} -> {fan_out:5d} ({macs / 1e6:7.1f}M MACs): aten {1e3 * aten:7.3f} ms "
                f"({2 * macs / aten / 1e9:4.0f} GFLOPS), onednn {1e3 * onednn:7.3f} ms "
                f"({2 * macs / onednn / 1e9:4.0f} GFLOPS), ratio aten / onednn: {aten / onednn:.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
