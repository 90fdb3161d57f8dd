"""The failures a command reports as one line and an exit code instead of a traceback (common.cli.run_cli).

Plain Python only: scripts import this before torch and numpy load.
"""
from __future__ import annotations

import signal


class PipelineError(Exception):
    """A known failure; the command line prints its message and exits with its exit_code."""
    exit_code = 1

    def line(self) -> str:
        """The one line printed on stderr."""
        return f"error: {self}"


class ConfigError(PipelineError, ValueError):
    """Bad options or input (a flag, a data dir, a checkpoint); the message names the fix."""
    exit_code = 2


class NonFiniteLossError(PipelineError, RuntimeError):
    """The loss became NaN/Inf; nothing of that step was saved."""
    exit_code = 3


class TrainingInterrupted(PipelineError):
    """SIGINT/SIGTERM arrived; last.pt holds the state after the batch it arrived in."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum

    def line(self) -> str:
        return str(self)
