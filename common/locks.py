"""Exclusive, process-lifetime locks on output folders, so two commands never write into one at once."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(path: Path) -> int | None:
    """Lock an existing file or folder exclusively (flock: the OS releases it when the process ends, even on
    kill -9); return the descriptor to close when done, or None when another process holds the lock."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
