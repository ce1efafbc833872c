"""The `corl` command line.

Every command lives in this package, one module per command (or command group): each exposes
`register(subparsers)`, which adds its parsers and sets `func` on each; this file wires them together.
Modules import the library they drive inside their `func`, so `corl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from corl.errors import RunFailed

# Order here is the order `corl --help` lists the commands in.
COMMAND_MODULES: tuple[str, ...] = (
    "corl.cli.config",
    "corl.cli.shapes",
    "corl.cli.demo",
    "corl.cli.generate",
    "corl.cli.eval",
    "corl.cli.merge",
    "corl.cli.train",
    "corl.cli.plan",
    "corl.cli.prefetch",
    "corl.cli.pilot",
    "corl.cli.reproduce",
)


def build_parser() -> argparse.ArgumentParser:
    from corl import __version__

    parser = argparse.ArgumentParser(
        prog="corl",
        description="CoRL: co-reinforcement learning for unified multimodal models (Janus-Pro).",
    )
    parser.add_argument("--version", action="version", version=f"corl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if getattr(args, "func", None) is None:
        # `corl` alone or `corl shapes` alone: show the relevant help instead of a traceback.
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, RunFailed) as err:  # one clear line, no traceback
        if args.verbose:
            raise
        print(f"corl {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        _close_process_group()


def _close_process_group() -> None:
    """Destroy the torch.distributed process group (one exists under `accelerate launch`) before the
    interpreter exits. Left to interpreter exit, gloo's threads can abort a rank that has finished its work
    ("terminate called without an active exception", exit -6), and the launcher then reports the whole
    run as failed."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for commands that did not
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
