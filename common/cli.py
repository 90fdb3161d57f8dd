"""Command-line plumbing shared by every script and runner: quiet interrupts, and run_cli, the one way a command
fails. Imports nothing heavy, so it can run before torch loads."""
from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Callable

from common.errors import PipelineError, TrainingInterrupted

EXIT_GRACE_SECONDS = 10.0


def quiet_interrupts() -> None:
    """Make Ctrl-C and SIGTERM end the process with one line and exit code 128 + signal instead of a traceback
    (while torch loads and data is read); training installs its own handler that saves last.pt first. The exit
    unwinds normally (finally blocks remove temporary output); should anything still hold the process
    EXIT_GRACE_SECONDS later (a worker pool caught mid-start has been seen to), it ends with the same code. A
    signal arriving inside a C extension's import (numpy's) comes out as an ImportError instead of the exit: once
    a signal came, any uncaught exception ends the process with the signal's code and no traceback."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        received.append(signum)
        watchdog = threading.Timer(EXIT_GRACE_SECONDS, os._exit, (128 + signum,))
        watchdog.daemon = True
        watchdog.start()
        sys.exit(128 + signum)

    def after_signal(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        if not received:
            sys.__excepthook__(kind, value, traceback)
            return
        sys.stderr.flush()
        os._exit(128 + received[0])

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

