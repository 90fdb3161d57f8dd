"""What the machine offers a command, asked the same way on Linux, macOS and Windows."""
from __future__ import annotations

import os

import psutil


def usable_cpus() -> int:
    """CPUs this process may run on: its CPU affinity where the OS keeps one (Linux, Windows), else all of them."""
    try:
        return len(psutil.Process().cpu_affinity())
    except (AttributeError, psutil.Error):  # macOS has no affinity
        return os.cpu_count() or 1
