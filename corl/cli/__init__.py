"""The `corl` command line.

Every command lives in this package, one module per command (or command group): each exposes
`register(subparsers)`, which adds its parsers and sets `func` on each; this file wires them together.
Modules import the library they drive inside their `func`, so `corl --help` stays fast.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from corl.cli.logs import setup_logging
from corl.errors import MissingPackage, RunFailed

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
    _add_debug_flags(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _add_debug_flags_to_subcommands(parser)
    return parser


def _add_debug_flags(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the Python traceback of an error (implies -v)")


def _add_debug_flags_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """`-v` / `--debug` after any (sub)command too. SUPPRESS keeps a subparser from resetting a flag
    given before the subcommand (`corl -v train ...`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_debug_flags(child, default=argparse.SUPPRESS)
                _add_debug_flags_to_subcommands(child)


# Errors that are the user's to fix (a bad value, a missing file, a damaged run): one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError, KeyError, RunFailed, MissingPackage)


def _check_argv(argv: list[str]) -> None:
    """Arguments must be text: bytes that are not UTF-8 reach Python as lone surrogates, which
    tokenizers and file systems reject deep inside a run."""
    for position, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as err:
            raw = arg.encode("utf-8", "surrogateescape")  # the bytes as the shell passed them
            raise ValueError(f"argument {position} ({raw!r}) is not valid UTF-8 text (at character "
                             f"{err.start}); re-type it or fix the terminal's encoding") from None


def _describe(err: BaseException) -> str:
    """One line for an error: a full disk is said as such, whichever layer noticed it."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" while writing {err.filename}" if err.filename else ""
        return f"no space left on device{where}: free some space, then continue with --resume"
    if isinstance(err, KeyError):
        return str(err.args[0]) if err.args else "missing key"
    return str(err)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        _check_argv(argv)
    except ValueError as err:
        print(f"corl: error: {err}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or argparse's one-line usage error
        return exit_.code if isinstance(exit_.code, int) else 2
    args.verbose = args.verbose or args.debug
    setup_logging(args.verbose)
    if getattr(args, "func", None) is None:
        # `corl` alone or `corl shapes` alone: show the relevant help instead of a traceback.
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    try:
        _apply_threads(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"corl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every error ends in one line unless --debug asks for more
        if args.debug:
            raise
        disk_full = isinstance(err, OSError) and err.errno == errno.ENOSPC
        if isinstance(err, USER_ERRORS) or disk_full:
            print(f"corl {args.command}: error: {_describe(err)}", file=sys.stderr)
            return 2
        # Not a mistake we know how to name: most likely a bug in corl or a library under it.
        print(f"corl {args.command}: unexpected error: {type(err).__name__}: {err} "
              "(rerun with --debug for the traceback; please report it)", file=sys.stderr)
        return 1
    finally:
        _close_process_group()


def _apply_threads(args: argparse.Namespace) -> None:
    """A compute command's `--threads` (corl.cli.argtypes.add_threads_argument): the given number, else
    the cores this process may use."""
    if not hasattr(args, "threads"):
        return
    import torch

    from corl.cli.argtypes import machine_threads

    torch.set_num_threads(args.threads or machine_threads())


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
