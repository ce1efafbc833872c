"""Start-up cost of the command line: wall time and peak memory of `corl --help` and of building the parser,
next to a bare `python -c pass`, each in fresh processes.

    .venv/bin/python benchmarks/cli_startup.py [--runs 10]

Each command runs once to warm the file cache, then `--runs` times, the commands taking turns; the table
shows the median wall time and the median peak RSS (the child's own, from wait4), and their ratios to the
bare interpreter. `corl --help` should stay under 0.3 s: the command modules import the libraries they
drive (torch, transformers, datasets) inside their functions, so a typo or `--help` never waits for them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELP_BUDGET_S = 0.3


def corl_help_command() -> list[str]:
    """The `corl` console script of this interpreter's environment, else the package run as a module."""
    script = Path(sys.executable).with_name("corl")
    return [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "corl.cli", "--help"]


COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "build_parser()": [sys.executable, "-c", "import corl.cli; corl.cli.build_parser()"],
    "corl --help": corl_help_command(),
}


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one fresh process (run from the checkout, so it imports it)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: Popen must not wait again
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}: {process.stderr.read().decode()}")
    process.stderr.close()
    rss_kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux
    return seconds, rss_kib / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per command (default 10)")
    args = parser.parse_args(argv)
    for command in COMMANDS.values():
        run_once(command)  # warm-up: the first run of each also reads its files from disk
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    memory: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, command in COMMANDS.items():
            seconds, mib = run_once(command)
            times[name].append(seconds)
            memory[name].append(mib)
    wall = {name: statistics.median(values) for name, values in times.items()}
    rss = {name: statistics.median(values) for name, values in memory.items()}
    base = "python -c pass"
    print(f"median of {args.runs} fresh processes each ({sys.executable})")
    print(f"{'command':<16} {'wall ms':>8} {'x base':>7} {'peak RSS MiB':>13} {'x base':>7}")
    for name in COMMANDS:
        print(f"{name:<16} {1e3 * wall[name]:8.1f} {wall[name] / wall[base]:7.2f} {rss[name]:13.1f} "
              f"{rss[name] / rss[base]:7.2f}")
    under = wall["corl --help"] < HELP_BUDGET_S
    print(f"corl --help under {HELP_BUDGET_S} s: {'yes' if under else 'NO'} ({wall['corl --help']:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
