"""Where a result came from: the command, the code (corl's commit when it runs from a git checkout, the
versions of the libraries that decide the numbers) and the machine. Recorded when a run starts, so a
report made later (or from a copied folder) still says what produced it."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES: tuple[str, ...] = ("corl", "torch", "transformers", "accelerate", "datasets", "numpy", "matplotlib")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(folder: Path | None = None) -> str | None:
    """The commit of the git checkout holding `folder` (default: the corl package), with "+uncommitted"
    when tracked files differ from it; None outside a checkout or without git."""
    import corl

    folder = folder or Path(corl.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+uncommitted" if dirty else head or None


def machine() -> dict[str, Any]:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count()
    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} device(s))"
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpu_cores": cores, "torch_threads": torch.get_num_threads(),
            "device": device, "host": platform.node()}


def collect(argv: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """One record of this process: command line, time, commit, versions, machine, plus `extra` (seeds)."""
    argv = sys.argv if argv is None else argv
    # `corl ...` as the user typed it; any other program (a test runner, a script) as it ran.
    program = Path(argv[0]) if argv else Path()
    ours = program.name == "corl" or (program.name == "__main__.py" and program.parent.name in ("corl", "cli"))
    words = ["corl", *argv[1:]] if ours else list(argv)
    command = " ".join(shlex.quote(a) for a in words)
    return {"command": command, "cwd": os.getcwd(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "commit": git_commit(), "versions": package_versions(), "machine": machine(), **extra}


def describe(record: dict[str, Any]) -> list[str]:
    """A record as the lines every report's provenance list shows: command, commit, versions, machine."""
    m = record["machine"]
    return [
        f"command: `{record['command']}` (in `{record['cwd']}`, started {record['started']})",
        f"corl commit: `{record['commit'] or 'not a git checkout'}`",
        "versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items() if v),
        f"machine: {m['platform']}, {m['processor']}, {m['cpu_cores']} CPU cores, {m['torch_threads']} torch "
        f"threads, device {m['device']}, Python {m['python']}",
    ]
