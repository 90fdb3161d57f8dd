"""`make clean` removes the demo's outputs, and raw_data/ only when it is the generated demo set: the seed README
puts a real PTB-XL download in raw_data/, which no command of ours may delete."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_clean(cwd: Path) -> str:
    """Run the project's `make clean` with cwd as the project folder; return its output."""
    done = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "clean"], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_clean_keeps_a_real_dataset_in_raw_data(tmp_path: Path) -> None:
    (tmp_path / "raw_data").mkdir()
    (tmp_path / "raw_data" / "ptbxl_database.csv").write_text("ecg_id\n1\n")
    (tmp_path / "baseline_ckpt").mkdir()
    assert "raw_data/ kept" in make_clean(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw_data"]
    assert (tmp_path / "raw_data" / "ptbxl_database.csv").read_text() == "ecg_id\n1\n"


def test_make_clean_removes_the_generated_demo_set(tmp_path: Path) -> None:
    for name in ("raw_data", "results", "baseline_ckpt", "pdd_ckpt"):
        (tmp_path / name).mkdir()
    (tmp_path / "raw_data" / "demo_dataset.json").write_text("{}\n")
    make_clean(tmp_path)
    assert list(tmp_path.iterdir()) == []
