"""Ctrl-C while a PDD script starts (torch loading) ends it with one line and exit code 130, never a traceback."""
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.parametrize("script, args", [
    ("compute_difficulty.py", []), ("pdd_split.py", []), ("pdd_folder_generator.py", []),
    ("bench/compare_runs.py", ["run_dir"]), ("bench/pdd_experiment.py", []),
])
def test_ctrl_c_at_start_up_ends_without_a_traceback(tmp_path: Path, script: str, args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.communicate(timeout=0.4)  # still importing torch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT and err.strip() == "interrupted by SIGINT", err
    assert list(tmp_path.iterdir()) == []
