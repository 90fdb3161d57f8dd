"""`make clean` and `python tasks.py clean` remove the demo's outputs, and raw_data/ only when it is the generated
demo set: the seed README puts a real PTB-XL download in raw_data/, which no command of ours may delete."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLEAN_COMMANDS = [
    pytest.param(["make", "-f", str(ROOT / "Makefile"), "clean"], id="make",
                 marks=pytest.mark.skipif(shutil.which("make") is None, reason="no make here (Windows)")),
    pytest.param([sys.executable, str(ROOT / "tasks.py"), "clean"], id="tasks.py"),
]


def clean(command: list[str], cwd: Path) -> str:
    """Run the project's clean command with cwd as the project folder; return its output."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", CLEAN_COMMANDS)
def test_clean_keeps_a_real_dataset_in_raw_data(command: list[str], tmp_path: Path) -> None:
    (tmp_path / "raw_data").mkdir()
    (tmp_path / "raw_data" / "ptbxl_database.csv").write_text("ecg_id\n1\n")
    (tmp_path / "baseline_ckpt").mkdir()
    assert "raw_data/ kept: it is not the generated demo data" in clean(command, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw_data"]
    assert (tmp_path / "raw_data" / "ptbxl_database.csv").read_text() == "ecg_id\n1\n"


@pytest.mark.parametrize("command", CLEAN_COMMANDS)
def test_clean_removes_the_generated_demo_set(command: list[str], tmp_path: Path) -> None:
    for name in ("raw_data", "results", "baseline_ckpt", "pdd_ckpt"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file.txt").write_text("x")
    (tmp_path / "raw_data" / "demo_dataset.json").write_text("{}\n")
    (tmp_path / "labels.csv").write_text("kept\n")
    assert "raw_data/ kept" not in clean(command, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]
