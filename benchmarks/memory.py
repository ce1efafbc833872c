"""Planned vs measured memory of real unified steps on CPU (`corl plan` against the process's peak RSS).

    .venv/bin/python benchmarks/memory.py [--layers 2 4 6] [--no-checkpointing-layers 4] [--steps 2]
    .venv/bin/python benchmarks/memory.py --device cuda      # the full 1B shape and recipe on one GPU

For each model: a random-weight Janus with Janus-Pro-1B's widths (hidden 2048, MLP 5632, 16 heads, vocab
102400, SigLIP-L/16 at 384 px, the 16384-code VQ model, 576-token images) but only L decoder layers is
saved, then `corl.trainer.train` runs the shipped recipe `janus-pro-1b/paper/unified` on it in a fresh process
(fp32 weights, bf16 compute, gradient checkpointing as shipped) for `--steps` unified steps: image and text
rollouts, rewards, scoring, update. Made small enough for a CPU: B = 1 prompt, G = 2, answers of 64 tokens
(a random model never stops early, so every answer has the full length), and prompts filled to
rollout.max_prompt_length = 640 tokens (captions of ~640 tokens; 576 image tokens + the question), so the
plan's longest-prompt assumption is what runs. Rewards: the visual cycle (MSE) and the answer's accuracy and
format, which load no extra model. Weights load memory-mapped on CPU (resident only where read); the
benchmark copies them into process memory, as a GPU holds all of them.

`--device cuda` runs the full 24-layer 1B shape with the recipe's own batch (B = 2, G = 8), answers of
512 tokens and prompts of 1024, and measures torch.cuda.max_memory_allocated per stage; it also prints the
seconds of each stage (image and text rollout, rewards, log-probs, update) from the trainer's metrics.

Measured on CPU: per trainer stage (image_rollout, text_rollout, rewards, logps, update) the peak resident set
size (VmHWM, reset at each stage's start through /proc/self/clear_refs) minus the process's RSS before the
run began (imports). glibc is told to return large blocks to the system (MALLOC_MMAP_THRESHOLD_), so the
RSS follows what tensors hold. Phases: rollout = the first four stages, update = the update (optimizer step
included). The plan is `corl.training.memory_plan.plan_run` for one CPU process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

CPU_PROMPT_TOKENS = 640
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"}


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS


def write_rows(directory: Path, processor, words: list[str], prompt_tokens: int) -> Path:
    """Two unified rows whose caption prompts and (image + question) prompts are `prompt_tokens` long."""
    from PIL import Image

    from corl.policy.prompts import encode_generation, encode_understanding

    image = Image.new("RGB", (384, 384), (200, 40, 40))
    image.paste((30, 30, 220), (100, 100, 260, 300))
    image.save(directory / "image.png")

    def fill(encode, budget: int) -> str:
        """The longest run of `words` whose prompt stays within `budget` tokens (binary search)."""
        def text(count: int) -> str:
            return " ".join(words[i % len(words)] for i in range(count))

        low, high = 0, 4 * budget
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if encode(text(middle)) <= budget else (low, middle - 1)
        return text(low)

    caption = fill(lambda c: encode_generation(processor, [c]).input_ids.shape[1], prompt_tokens)
    question = fill(lambda q: encode_understanding(processor, [image], [q]).input_ids.shape[1], prompt_tokens - 8)
    rows = [{"prompt": caption, "image": "image.png", "question": question + " A. red B. blue",
             "solution": "<answer>A</answer>", "question_type": "mc"} for _ in range(2)]
    path = directory / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class PeakMemory:
    """Peak memory of a stage: process RSS (VmHWM) on CPU, torch's allocator on CUDA (bytes)."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak()

    def peak(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return vm_kib("VmHWM") * 1024

    def current(self) -> int:
        import torch

        return torch.cuda.memory_allocated() if self.cuda else vm_kib("VmRSS") * 1024


def child(layers: int, checkpointing: bool, steps: int, workdir: Path, device: str = "cpu") -> dict:
    """One measured run in this (fresh) process; returns plan and measurements."""
    import torch

    import corl.trainer as trainer_module
    from corl.config import load_config, resolve_recipe
    from corl.policy import JanusPolicy, save_policy
    from corl.policy.architecture import JANUS_PRO_1B, build_janus
    from corl.policy.testing import TINY_WORDS
    from corl.policy.tokenizer import build_processor, build_tokenizer
    from corl.training.memory_plan import Devices, plan_run
    from corl.training.tracking import StageTimer

    torch.set_num_threads(int(os.environ.get("CORL_BENCH_THREADS", "2")))
    memory = PeakMemory(device)
    sizes = replace(JANUS_PRO_1B, text_layers=layers)
    tokenizer = build_tokenizer(list(TINY_WORDS))
    processor = build_processor(tokenizer, sizes.image_size, patch_size=sizes.patch_size)
    model_dir = workdir / "model"
    torch.manual_seed(0)
    save_policy(JanusPolicy(build_janus(sizes, tokenizer), processor), model_dir)
    recipe = resolve_recipe("janus-pro-1b/paper/unified")
    shipped = load_config(recipe)
    # On CPU a smaller batch, shorter answers and prompts; on a GPU the recipe's own.
    shrink = [] if device == "cuda" else ["rollout.num_generations=2", "train.per_device_batch_size=1",
                                          f"rollout.max_prompt_length={CPU_PROMPT_TOKENS}",
                                          "rollout.max_completion_length=64"]
    prompt_tokens = shipped.rollout.max_prompt_length if device == "cuda" else CPU_PROMPT_TOKENS
    rows = write_rows(workdir, processor, [w for w in TINY_WORDS if w.isalpha()], prompt_tokens)
    cfg = load_config(recipe, [
        f"model.name_or_path={model_dir}", "model.dtype=fp32", "train.precision=bf16",
        f"model.gradient_checkpointing={str(checkpointing).lower()}", f"data.source={rows}", *shrink,
        f"train.max_steps={steps}", "train.save_steps=0", "train.sample_steps=0",
        "rewards.t2i_reward_funcs=[cycle_visual]", "rewards.t2i_reward_weights=[1.0]", "rewards.image_similarity=mse",
    ])
    total = torch.cuda.get_device_properties(0).total_memory if device == "cuda" else None
    plan = plan_run(cfg, Devices(device, 1, total))

    peaks: list[dict[str, int]] = []

    class PeakTimer(StageTimer):
        """The trainer's timer, also recording each stage's peak RSS (bytes) per step."""

        current: dict[str, int] = {}

        def __call__(self, name):
            timed = super().__call__(name)

            class Measured:
                def __enter__(self_inner):
                    memory.reset()
                    return timed.__enter__()

                def __exit__(self_inner, *exc):
                    PeakTimer.current[name] = max(PeakTimer.current.get(name, 0), memory.peak())
                    return timed.__exit__(*exc)

            return Measured()

        def pop(self):
            peaks.append(dict(PeakTimer.current))
            PeakTimer.current = {}
            return super().pop()

    trainer_module.StageTimer = PeakTimer  # the trainer builds its timer from this name
    load_trainable_policy = trainer_module.load_trainable_policy

    def resident_policy(*args, **kwargs):
        # safetensors weights load memory-mapped on CPU, resident only where read (most embedding rows never
        # are); a GPU holds all of them, so the benchmark copies them into process memory
        trainable = load_trainable_policy(*args, **kwargs)
        with torch.no_grad():
            for param in trainable.policy.model.parameters():
                param.data = param.data.clone()
        return trainable

    if device == "cpu":
        trainer_module.load_trainable_policy = resident_policy
    base = memory.current()
    trainer_module.train(cfg, workdir / "run")
    from corl.training.tracking import read_metrics

    _, metrics = read_metrics(workdir / "run" / "metrics.jsonl")
    seconds = {k: v for k, v in metrics[-1].items() if k.startswith("time/")}
    return {"layers": layers, "checkpointing": checkpointing, "base_rss": base, "peaks": peaks,
            "plan_phases": plan.phases, "plan_table": plan.table(), "seconds": seconds, "device": device}


def summarize(result: dict) -> tuple[str, float]:
    last = result["peaks"][-1]  # the last step: the optimizer's states exist by then
    base = result["base_rss"]
    rollout = max(last.get(s, 0) for s in ("image_rollout", "text_rollout", "rewards", "logps")) - base
    update = last["update"] - base
    plan = result["plan_phases"]
    plan_update = max(plan["update"], plan["step"])
    measured_total, plan_total = max(rollout, update), max(plan.values())
    ratio = measured_total / plan_total
    gib = 1 << 30
    line = (f"{result['layers']} layers, checkpointing {'on ' if result['checkpointing'] else 'off'} | "
            f"rollout plan {plan['rollout'] / gib:6.2f} measured {rollout / gib:6.2f} | "
            f"update plan {plan_update / gib:6.2f} measured {update / gib:6.2f} | "
            f"total plan {plan_total / gib:6.2f} measured {measured_total / gib:6.2f} GiB  "
            f"measured/plan {ratio:.2f}")
    if result["device"] == "cuda":
        line += "\n  seconds: " + ", ".join(f"{k[5:]} {v:.1f}" for k, v in result["seconds"].items())
    return line, ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--layers", type=int, nargs="*", default=None,
                        help="decoder layers of each model (default: 2 4 6 on CPU, 24 on CUDA)")
    parser.add_argument("--no-checkpointing-layers", type=int, nargs="*", default=None,
                        help="also run these depths with gradient checkpointing off (default: 4 on CPU)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--show-plans", action="store_true", help="print each plan's table")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        layers, checkpointing, workdir = int(args.child[0]), args.child[1] == "1", Path(args.child[2])
        print("RESULT " + json.dumps(child(layers, checkpointing, args.steps, workdir, args.device)))
        return 0

    cuda = args.device == "cuda"
    depths = args.layers if args.layers is not None else ([24] if cuda else [2, 4, 6])
    eager = args.no_checkpointing_layers if args.no_checkpointing_layers is not None else ([] if cuda else [4])
    runs = [(n, True) for n in depths] + [(n, False) for n in eager]
    env = {**os.environ, **MALLOC_ENV, "CORL_CACHE": tempfile.mkdtemp(prefix="corl-memory-cache-")}
    lines, worst = [], 0.0
    for layers, checkpointing in runs:
        with tempfile.TemporaryDirectory(prefix="corl-memory-") as workdir:
            command = [sys.executable, __file__, "--steps", str(args.steps), "--device", args.device,
                       "--child", str(layers), "1" if checkpointing else "0", workdir]
            done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-6000:], sep="\n")
            return done.returncode
        result = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[7:])
        line, ratio = summarize(result)
        if args.show_plans:
            print(result["plan_table"])
        print(line, flush=True)
        lines.append(line)
        worst = max(worst, abs(ratio - 1.0))
    print(f"largest |measured/plan - 1| over {len(lines)} runs: {worst:.1%} (target: within 20%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
