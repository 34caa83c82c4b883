"""A lock file that a dead process does not leave stuck.

The file holds ``pid@host`` and is created with ``O_EXCL``. A lock whose process is gone (same
host, pid no longer alive) is taken over; a lock held by a live process, or by another host
(whose pids cannot be checked from here), is respected. Used by the trainer (one training per
run directory) and the study runner (one study process per run).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def me() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def lock_holder(path: str | Path) -> str:
    """Who holds the lock (``pid@host``), or ``""``."""
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return ""


def take_lock(path: str | Path) -> bool:
    """Create ``path`` exclusively; False when a live process holds it."""
    path = Path(path)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid, _, host = lock_holder(path).partition("@")
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            # True when this process holds it already
            return pid.isdigit() and int(pid) == os.getpid() and host == socket.gethostname()
        with os.fdopen(fd, "w") as f:
            f.write(me())
        return True
    return False


def release_lock(path: str | Path) -> None:
    """Remove the lock if this process holds it."""
    path = Path(path)
    if lock_holder(path) == me():
        path.unlink(missing_ok=True)
