"""Command-line plumbing shared by every script and runner: quiet interrupts, and run_cli, the one way a command
fails. Imports nothing heavy, so it can run before torch loads."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Callable

from common.errors import PipelineError, TrainingInterrupted

EXIT_GRACE_SECONDS = 10.0
UNFINISHED: set[Path] = set()  # temporary folders to remove should the process end before its finally blocks do


@contextlib.contextmanager
def removed_on_forced_exit(path: Path) -> Iterator[None]:
    """Name path as unfinished while the block runs, so quiet_interrupts' watchdog removes it too when the normal
    unwinding (which removes it) has not ended the process in time."""
    UNFINISHED.add(path)
    try:
        yield
    finally:
        UNFINISHED.discard(path)


def forced_exit(code: int) -> None:
    """End the process now with code, after removing the unfinished temporary folders."""
    for path in list(UNFINISHED):
        shutil.rmtree(path, ignore_errors=True)
    sys.stderr.flush()
    os._exit(code)


def quiet_interrupts() -> None:
    """Make Ctrl-C and SIGTERM end the process with one line and exit code 128 + signal instead of a traceback
    (while torch loads and data is read); training installs its own handler that saves last.pt first. The exit
    unwinds normally (finally blocks remove temporary output); should anything still hold the process
    EXIT_GRACE_SECONDS later (a worker pool caught mid-start has been seen to, and CI once saw preprocess.py's pool
    take longer to stop), it removes the unfinished temporary folders and ends with the same code. A
    signal arriving inside a C extension's import (numpy's) comes out as an ImportError instead of the exit: once
    a signal came, any uncaught exception ends the process with the signal's code and no traceback."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        received.append(signum)
        watchdog = threading.Timer(EXIT_GRACE_SECONDS, forced_exit, (128 + signum,))
        watchdog.daemon = True
        watchdog.start()
        sys.exit(128 + signum)

    def after_signal(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if not received:
            sys.__excepthook__(kind, value, traceback)
            return
        forced_exit(128 + received[0])

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    sys.excepthook = after_signal


def run_cli(main: Callable[[], object], bad_input: tuple[type[Exception], ...] = (OSError, ValueError),
            interrupted: str = "") -> int:
    """Run a script's main() and return the exit code for sys.exit: main's own when it returns an int, else 0. A
    PipelineError prints its one line and exits with its exit_code (ConfigError 2, NonFiniteLossError 3,
    TrainingInterrupted 128 + signal, with `interrupted` appended: how to continue); any other `bad_input`
    exception prints `error: <message>` and exits 2. No traceback for any of them."""
    try:
        code = main()
    except PipelineError as e:
        line = e.line() + (f"; {interrupted}" if interrupted and isinstance(e, TrainingInterrupted) else "")
        print(line, file=sys.stderr)
        return e.exit_code
    except bad_input as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0

