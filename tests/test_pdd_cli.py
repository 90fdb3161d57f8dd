"""Ctrl-C while a script starts (torch loading) ends it with one line and exit code 130, never a traceback."""
import signal
import sys
from pathlib import Path

import pytest

from conftest import ROOT, interrupt_at_start_up


@pytest.mark.parametrize("script, args", [
    ("train_1d_baseline.py", []), ("preprocess.py", []),
    ("compute_difficulty.py", []), ("pdd_split.py", []), ("pdd_folder_generator.py", []),
    ("tools/compare_runs.py", ["run_dir"]), ("experiments/pdd_experiment.py", []),
])
@pytest.mark.linux_only  # waits for the handler by reading /proc/PID/status; Windows has no SIGINT to send
def test_ctrl_c_at_start_up_ends_without_a_traceback(tmp_path: Path, script: str, args: list[str]) -> None:
    result = interrupt_at_start_up([sys.executable, str(ROOT / script), *args], tmp_path)
    assert result.returncode == 128 + signal.SIGINT and result.stderr.strip() == "interrupted by SIGINT", result.stderr
    assert list(tmp_path.iterdir()) == []
