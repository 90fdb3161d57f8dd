"""bench/compare_runs.py: the table, the note that a small test split cannot separate runs, and one-line refusals of
runs with other classes or a corrupt metrics.json."""
import json
from pathlib import Path

import numpy as np
import pytest

from common.datadir import write_json_atomic
from conftest import run_repo_script

CLASSES = ["A", "B"]


def fake_run(root: Path, name: str, y_test: np.ndarray, classes: list[str] = CLASSES, auc: float = 0.9) -> Path:
    """A finished run dir (metrics.json) whose data dir holds y_test.npy and meta.json."""
    data, run = root / f"{name}_data", root / name
    data.mkdir(parents=True)
    run.mkdir()
    np.save(data / "y_test.npy", y_test)
    write_json_atomic(data / "meta.json", {"counts": {"train": 100}})
    split = {"macro_auc": auc, "per_class_auc": {c: auc for c in classes}, "n_records": len(y_test)}
    write_json_atomic(run / "metrics.json", {
        "test": split, "val": split, "epochs": 3, "best_epoch": 2, "samples_backpropagated": 300,
        "wall_seconds": 60.0, "data_dir": str(data), "classes": classes, "multilabel": True})
    return run


def labels(n: int, positives: list[int]) -> np.ndarray:
    """Multi-hot y (n, classes) with the given number of positives per class."""
    y = np.zeros((n, len(positives)), dtype=np.float32)
    for k, p in enumerate(positives):
        y[:p, k] = 1
    return y


def test_a_small_test_split_is_flagged_with_what_one_record_can_move(tmp_path):
    y = labels(30, [3, 15])
    a, b = fake_run(tmp_path, "a", y, auc=0.95), fake_run(tmp_path, "b", y, auc=0.98)
    result = run_repo_script("bench/compare_runs.py", a, b)
    assert result.returncode == 0, result.stderr
    assert "0.9500" in result.stdout and "0.9800" in result.stdout
    # class A: 3 positives, 27 negatives; one A record moves A's AUC by up to 1/3, the macro-AUC by (1/3)/2
    assert ("the test split has 30 records, A 3 positives and 27 negatives: one A record can move its AUC by up to "
            "0.333 and the macro-AUC by up to 0.167, so this table cannot separate these runs") in result.stdout


@pytest.mark.parametrize("n, positives, note", [
    (1000, [120, 400], None), (1000, [40, 400], "1000 records, A 40 positives and 960 negatives"),
    (300, [100, 150], "300 records, A 100 positives and 200 negatives"),
])
def test_the_note_needs_few_records_or_a_rare_label(tmp_path, n, positives, note):
    y = labels(n, positives)
    result = run_repo_script("bench/compare_runs.py", fake_run(tmp_path, "a", y), fake_run(tmp_path, "b", y))
    assert result.returncode == 0, result.stderr
    assert ("\nnote: " in result.stdout) == (note is not None) and (note is None or note in result.stdout)


def test_runs_with_other_classes_are_refused_in_one_line(tmp_path):
    a = fake_run(tmp_path, "a", labels(30, [3, 15]))
    b = fake_run(tmp_path, "b", labels(30, [3, 15, 5]), classes=["A", "B", "C"])
    result = run_repo_script("bench/compare_runs.py", a, b)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {b} has classes ['A', 'B', 'C'] but {a} has ['A', 'B']; compare runs "
                                     "trained on the same classes")


def test_a_corrupt_or_incomplete_metrics_json_is_named_in_one_line(tmp_path):
    a, b = fake_run(tmp_path, "a", labels(30, [3, 15])), fake_run(tmp_path, "b", labels(30, [3, 15]))
    metrics = b / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    result = run_repo_script("bench/compare_runs.py", a, b)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and f"{metrics} is not valid JSON" in lines[0]
    write_json_atomic(metrics, {"test": {}})
    result = run_repo_script("bench/compare_runs.py", a, b)
    assert result.returncode == 2 and f"{metrics} lacks val, epochs" in result.stderr
    assert "Traceback" not in result.stderr and json.loads(metrics.read_text()) == {"test": {}}
