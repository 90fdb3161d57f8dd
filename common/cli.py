"""Command-line plumbing shared by the scripts; imports nothing heavy, so it can run before torch loads."""
from __future__ import annotations

import signal
import sys
from types import FrameType


def quiet_interrupts() -> None:
    """Make Ctrl-C and SIGTERM end the process with one line and exit code 128 + signal instead of a traceback
    (while torch loads and data is read); training installs its own handler that saves last.pt first."""
    def handler(signum: int, frame: FrameType | None) -> None:
        print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        sys.exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
