"""Shared-prompt scoring (`train.share_prompts`) against row-by-row scoring, side by side in one run.

    .venv/bin/python benchmarks/shared_prompts.py [--model-path DIR] [--device cpu|cuda] [--repeats 7]
        [--stage-steps 10] [--stages oe mc] [--threads 2]

1. Scoring: one micro-batch of the oe recipe (`recipes/shapes-tiny/oe.yaml`: 16 training questions x G = 8
   answers, sampled at the recipe's temperature and length cap) is scored by `text_token_logps` both ways:
   without grad (pi_old / pi_ref) and forward + backward (the update). The two ways alternate, `--repeats`
   times each; the median seconds, their ratio, the tokens each runs through the LLM and the largest
   difference of a log-prob are printed.
2. Stages: `corl.trainer.train` runs each of `--stages` for `--stage-steps` steps of its shipped shapes-tiny
   recipe with train.share_prompts=false and =true (the default), in turn, into a temporary directory; the
   trainer's own time/logps, time/update and time/step, averaged over the steps after the first, and the
   ratios are printed. The rollouts are the same both ways (same seed), so the rewards agree.

Model: the Shapes base checkpoint by default (`--model-path` for any saved Janus checkpoint).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import corl.policy.loading  # noqa: F401,E402  (before transformers: the torchvision shim)
import torch  # noqa: E402

from corl.config import load_config, resolve_recipe  # noqa: E402


def scoring_batch(policy, cfg, n_questions: int):
    """One oe micro-batch: the first `n_questions` OE rows of the training split, G answers each."""
    from datasets import load_from_disk

    from corl.data.shapes_source import shapes_dir_of
    from corl.generation.rollout import rollout_text

    split = load_from_disk(str(shapes_dir_of(cfg.data)))["train"]
    rows = split.filter(lambda r: r["question_type"] == "oe").select(range(n_questions))
    r = cfg.rollout
    return rollout_text(policy, list(rows["image"]), list(rows["question"]), group_size=r.num_generations,
                        max_new_tokens=r.max_completion_length, temperature=r.temperature, seed=0)


def time_scoring(policy, rollout, temperature: float, repeats: int) -> None:
    from corl.policy.scoring import text_token_logps

    args = (policy, rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values, rollout.completion_ids,
            rollout.completion_mask)
    mask = rollout.completion_mask.bool()
    rows, prompt_len = rollout.prompt_ids.shape
    completion_len = rollout.completion_ids.shape[1]
    groups = prompt_groups(rollout)
    # tokens through the LLM: every row's prompt and answer, or one packed sequence per group
    tokens = {False: rows * (prompt_len + completion_len),
              True: groups.num_groups * (prompt_len + groups.max_size * completion_len)}
    for p in policy.model.parameters():
        p.requires_grad_(True)
    seconds: dict[tuple[bool, bool], list[float]] = {}
    with torch.no_grad():
        plain = text_token_logps(*args, temperature=temperature)
        packed = text_token_logps(*args, temperature=temperature, share_prompts=True)
    for _ in range(repeats):
        for grad in (False, True):
            for share in (False, True):
                policy.model.zero_grad(set_to_none=True)
                start = time.perf_counter()
                with torch.set_grad_enabled(grad):
                    logps = text_token_logps(*args, temperature=temperature, share_prompts=share)
                    if grad:
                        (logps * rollout.completion_mask).sum().backward()
                seconds.setdefault((grad, share), []).append(time.perf_counter() - start)
    print(f"\nscoring one oe micro-batch: {rows} answers to {groups.num_groups} prompts, prompts {prompt_len} tokens, answers "
          f"up to {completion_len}; LLM tokens row by row {tokens[False]}, shared {tokens[True]} "
          f"({tokens[False] / tokens[True]:.2f}x fewer)")
    print(f"largest |log-prob difference| on answer tokens: {(plain - packed)[mask].abs().max().item():.2e}")
    print(f"{'':22s} {'row by row s':>13s} {'shared s':>10s} {'ratio':>7s}")
    for grad, label in ((False, "no grad (old / ref)"), (True, "forward + backward")):
        a, b = statistics.median(seconds[(grad, False)]), statistics.median(seconds[(grad, True)])
        print(f"{label:22s} {a:13.4f} {b:10.4f} {a / b:6.2f}x")


def prompt_groups(rollout):
    """The rollout's runs of rows with one prompt and image, as packed scoring groups them."""
    from corl.policy.shared_prompts import consecutive_prompt_groups

    return consecutive_prompt_groups(rollout.prompt_ids, rollout.prompt_mask, rollout.pixel_values)


def time_stages(stages: list[str], model: str, args: argparse.Namespace) -> None:
    from corl import trainer

    parts = ("logps", "update", "step")
    results: dict[tuple[str, bool], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for stage in stages:
            for share in (False, True):
                cfg = load_config(resolve_recipe(f"shapes-tiny/{stage}"), [
                    f"model.name_or_path={model}", f"model.device={args.device}", f"train.max_steps={args.stage_steps}",
                    "train.logging_steps=1", "train.sample_steps=0", "train.eval_steps=0", "train.save_steps=0",
                    f"train.share_prompts={str(share).lower()}"])
                out = Path(scratch) / f"{stage}-{share}"
                trainer.train(cfg, out)
                lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                steps = [row for row in lines if "time/step" in row][1:]  # the first pays one-off costs
                results[(stage, share)] = {p: statistics.mean(row[f"time/{p}"] for row in steps) for p in parts}
                results[(stage, share)]["reward"] = statistics.mean(row["reward/mm2t/mean"] for row in steps
                                                                    if "reward/mm2t/mean" in row)
    print(f"\ntrainer seconds per step (mean of steps 2..{args.stage_steps}), row by row -> shared (ratio)")
    print(f"{'stage':8s} " + " ".join(f"{p:>26s}" for p in parts) + f" {'mean answer reward':>20s}")
    for stage in stages:
        a, b = results[(stage, False)], results[(stage, True)]
        cells = [f"{a[p]:7.3f} -> {b[p]:7.3f} ({a[p] / b[p]:4.2f}x)" for p in parts]
        print(f"{stage:8s} " + " ".join(f"{c:>26s}" for c in cells) + f" {a['reward']:9.3f} / {b['reward']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default="shapes-base", help="a saved Janus checkpoint (default: Shapes base)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--questions", type=int, default=16, help="prompts in the scored micro-batch")
    parser.add_argument("--stages", nargs="*", default=["oe", "mc"], choices=["unified", "mc", "oe", "mm2t"])
    parser.add_argument("--stage-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from corl.policy.loading import load_policy, resolve_model_path

    cfg = load_config(resolve_recipe("shapes-tiny/oe"), [f"model.name_or_path={args.model_path}"])
    policy = load_policy(args.model_path, device=args.device, announce=False)
    print(f"model {resolve_model_path(args.model_path)}, {args.device}, {args.threads} threads, "
          f"{policy.model.model.language_model.config._attn_implementation} attention")
    rollout = scoring_batch(policy, cfg, args.questions)
    time_scoring(policy, rollout, cfg.rollout.temperature, args.repeats)
    if args.stages and args.stage_steps > 1:
        time_stages(args.stages, args.model_path, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
