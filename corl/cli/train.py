"""`corl train RECIPE --out DIR [key=value ...] [--resume | --resume-from CHECKPOINT]`: run one CoRL stage.

The same command runs in one process and under `accelerate launch` (DDP and friends; configs in
recipes/accelerate/), e.g.

    corl train shapes-tiny/unified --out runs/unified train.max_steps=20
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m corl.cli train janus-pro-1b/paper/unified --out runs/u

Heavy imports happen inside the command, so `corl --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from corl.cli.argtypes import add_threads_argument

AUTO = "auto"


def run_train(args: argparse.Namespace) -> int:
    from corl.config import load_config, resolve_recipe
    from corl.trainer import train

    cfg = load_config(resolve_recipe(args.recipe), args.overrides)
    resume = args.resume_from if args.resume_from is not None else (AUTO if args.resume else None)
    result = train(cfg, args.out, resume=resume, allow_config_change=args.allow_config_change)
    return 0 if result.final_checkpoint is not None else 1


class _IntermixedParser(argparse.ArgumentParser):
    """Lets key=value overrides come before or after --out / --resume (plain argparse stops collecting
    positionals at the first option, so `train RECIPE --out DIR a=1` would reject `a=1`)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="run a CoRL stage (unified, t2i, mc, oe) from a recipe",
        description="GRPO post-training of a unified multimodal model: one stage of CoRL from a YAML recipe "
                    "plus key=value overrides. Writes OUT/config.yaml, OUT/metrics.jsonl, OUT/checkpoint-N/, "
                    "OUT/samples/ and OUT/summary.json.",
    )
    p.add_argument("recipe", help="recipe file or shipped name, e.g. shapes-tiny/unified or janus-pro-1b/paper/t2i")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. grpo.beta=0.02 train.max_steps=5")
    p.add_argument("--out", required=True, type=Path, help="output directory of the run")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its newest checkpoint (a fresh start if it has none)")
    resume.add_argument("--resume-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="continue from this checkpoint (OUT/checkpoint-N), or the newest one inside that folder")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue with a config that differs from the run's (the change is "
                        "recorded in OUT/config_changes.jsonl); refused otherwise")
    add_threads_argument(p)
    p.__class__ = _IntermixedParser
    p.set_defaults(func=run_train, _parser=p)
