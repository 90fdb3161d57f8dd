"""The portable test mode: with this folder on PYTHONPATH, every Python process started (pytest, the scripts it
runs, their workers: they inherit PYTHONPATH) lacks the facilities Windows does not have, so a Linux machine
shows what breaks there: `import fcntl` fails, os.fork and signal.pthread_sigmask are gone, and multiprocessing
spawns its workers. `python tasks.py test-portable` runs the suite so; tests/conftest.py skips the tests marked
linux_only when ECG_PORTABLE_TEST is 1."""
from __future__ import annotations

import importlib.abc
import multiprocessing
import os
import signal
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Sequence

LINUX_ONLY_MODULES = frozenset({"fcntl"})


class LinuxOnlyModules(importlib.abc.MetaPathFinder):
    """Refuses the Linux-only modules, with the ModuleNotFoundError Windows gives."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname in LINUX_ONLY_MODULES:
            raise ModuleNotFoundError(f"No module named {fullname!r} (portable test mode: tests/portable)",
                                      name=fullname)
        return None


sys.meta_path.insert(0, LinuxOnlyModules())
for name in LINUX_ONLY_MODULES:
    sys.modules.pop(name, None)
for module, attribute in ((os, "fork"), (signal, "pthread_sigmask")):
    if hasattr(module, attribute):
        delattr(module, attribute)
multiprocessing.set_start_method("spawn", force=True)
os.environ["ECG_PORTABLE_TEST"] = "1"
