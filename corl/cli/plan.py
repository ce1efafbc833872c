"""`corl plan RECIPE [key=value ...] --gpus N --gpu-memory GB`: per-device memory of a run, before renting it.

Reads only the model's config (a local checkpoint, the published Janus-Pro sizes, or the hub's config.json),
never the weights. Exit status 0 when the run fits, 1 when it does not. `corl train` makes the same plan
for the devices it sees and stops before loading weights when the run cannot fit.
"""

from __future__ import annotations

import argparse
from corl.cli.argtypes import positive_float, positive_int


def run_plan(args: argparse.Namespace) -> int:
    from corl.config import load_config, resolve_recipe
    from corl.training.memory_plan import GiB, Devices, plan_run

    if args.gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {args.gpus}")
    if args.gpu_memory is not None and args.gpu_memory <= 0:
        raise ValueError(f"--gpu-memory must be > 0 GB, got {args.gpu_memory}")
    cfg = load_config(resolve_recipe(args.recipe), args.overrides)
    memory = None if args.gpu_memory is None else int(args.gpu_memory * GiB)
    if args.device not in ("cuda", "cpu"):
        raise ValueError(f"--device must be cuda or cpu for a plan, got {args.device!r}")
    plan = plan_run(cfg, Devices(args.device, args.gpus, memory))
    print(f"{args.recipe} (stage {cfg.stage}, {cfg.model.name_or_path})")
    print(plan.table())
    return 0 if plan.fits else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="plan a run's memory per device (weights, optimizer, KV caches, activations)",
        description="Per-device memory table of a recipe on N devices: weights, gradients, optimizer states, "
                    "reference and reward models, rollout KV caches, update activations, and the largest "
                    "update micro-batch (train.update_batch_size) that fits. Exit status 1 when it does not fit.",
    )
    p.add_argument("recipe", help="recipe file or shipped name, e.g. janus-pro-1b/paper/unified")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.sharding=fsdp2")
    p.add_argument("--gpus", type=positive_int, default=1, help="processes (one per GPU) the run is launched with")
    p.add_argument("--gpu-memory", type=positive_float, default=None, metavar="GB",
                   help="memory of one device in GiB (e.g. 80 for an H100); without it, only the table")
    p.add_argument("--device", default="cuda",
                   help="device type the run uses, cuda or cpu (sets the recipes' auto dtypes; default cuda)")
    p.set_defaults(func=run_plan, _parser=p)
