"""argparse `type=` checkers shared by the commands: a bad number is refused while the command line is
parsed (one line naming the flag), before anything loads."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    return _number(text, float)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def nonempty_text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def machine_threads() -> int:
    """CPU cores this process may run on (its affinity: a container's or taskset's limit, not the host's)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def add_threads_argument(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """`--threads N` of a compute command (corl.cli.main applies it before the command runs)."""
    shown = default if default is not None else "this machine's cores"
    parser.add_argument("--threads", type=positive_int, default=default,
                        help=f"torch CPU threads (default: {shown}); lower it on a shared machine")
