"""One run per output folder: an exclusive lock on OUT/.corl-lock for as long as the run's process lives.

The lock is an flock(2) on the file: the operating system drops it when the process exits, crashes or is
killed, so a stale lock never blocks a resume. The file names its holder (pid, host, start time, command
line) for the error a second run gets. Local file systems only: flock over NFS depends on the mount.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".corl-lock"


class RunInUse(ValueError):
    """Another live process holds the output folder."""


class RunLock:
    def __init__(self, handle) -> None:
        self._handle = handle

    @classmethod
    def acquire(cls, out_dir: Path) -> RunLock:
        """Lock `out_dir` (created if needed) or raise RunInUse naming the process that holds it."""
        import fcntl

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / LOCK_FILE
        handle = open(path, "a+")  # noqa: SIM115  (held open for the run's lifetime)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                info = json.loads(holder)
                who = (f"pid {info['pid']} on {info['host']}, started {info['started']}: "
                       f"{info['command']}")
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise RunInUse(f"{out_dir} is in use by another corl run ({who}); wait for it to end or choose a "
                           f"new --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)[:300]}))
        handle.flush()
        return cls(handle)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None
