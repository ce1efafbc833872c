"""Where this process stands in a launch (`accelerate launch`, torchrun), read before accelerate starts.

The launcher sets RANK / LOCAL_RANK / WORLD_SIZE in every process's environment, so logging and progress
bars can pick rank 0 without importing torch or accelerate.
"""

from __future__ import annotations

import os


def launch_rank() -> tuple[int, int]:
    """(rank, world size) of this process as the launcher set them; (0, 1) when not launched."""
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
    world = os.environ.get("WORLD_SIZE") or "1"
    return (int(rank) if rank.isdigit() else 0), (int(world) if world.isdigit() else 1)


def is_main_launch_rank() -> bool:
    """True on rank 0 and outside a launch: the process that draws progress bars."""
    return launch_rank()[0] == 0
