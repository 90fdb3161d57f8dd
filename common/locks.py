"""Exclusive, process-lifetime locks on output folders, so two commands never write into one at once.

A folder's lock is a file in this user's temp folder named by a digest of the folder's resolved path, so locking
writes nothing into the user's folders and works before the folder exists. filelock takes the operating system's
lock on it (flock on Linux and macOS, msvcrt.locking on Windows), which the OS releases when the holder dies, even on
kill -9; where neither exists it falls back to a lock file naming its holder's process, which the next run takes
over once that process is gone. Two machines sharing a network folder do not see each other's locks."""
from __future__ import annotations

import getpass
import hashlib
import os
import tempfile
import warnings
from pathlib import Path

with warnings.catch_warnings():  # where the OS offers no lock, the fallback below is meant, not a problem
    warnings.filterwarnings("ignore", "only soft file lock is available")
    from filelock import FileLock, Timeout


def lock_file(folder: Path) -> Path:
    """The lock file that stands for `folder` (the same for every spelling of its path)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = "user"
    key = hashlib.sha256(os.path.normcase(Path(folder).resolve()).encode()).hexdigest()[:32]
    return Path(tempfile.gettempdir()) / f"ecg-pipeline-locks-{user}" / f"{key}.lock"


def try_lock(folder: Path) -> FileLock | None:
    """Lock `folder` for this process; return the lock, whose release() ends it, or None when another process
    holds it."""
    path = lock_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, thread_local=False, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock
