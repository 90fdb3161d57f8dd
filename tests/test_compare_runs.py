"""tools/compare_runs.py: the table, the paired interval of two runs' macro-AUC difference, the note that a small
test split cannot separate runs, and one-line refusals of runs with other classes, other test records or a corrupt
metrics.json."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.datadir import file_sha256, write_json_atomic
from common.ensemble import train_ensemble
from common.train import train
from conftest import run_repo_script, tiny_train_config, with_preprocess_meta

pytestmark = pytest.mark.slow  # trains and re-scores whole runs: see pytest.ini

CLASSES = ["A", "B"]


def fake_run(root: Path, name: str, y_test: np.ndarray, classes: list[str] = CLASSES, auc: float = 0.9) -> Path:
    """A finished run dir (metrics.json, no checkpoint) whose data dir holds X_test.npy, y_test.npy and meta.json;
    runs made with the same y_test share their test records."""
    data, run = root / f"{name}_data", root / name
    data.mkdir(parents=True)
    run.mkdir()
    np.save(data / "X_test.npy", np.random.default_rng(0).standard_normal((len(y_test), 12, 20), dtype=np.float32))
    np.save(data / "y_test.npy", y_test)
    write_json_atomic(data / "meta.json", {"counts": {"train": 100}, "fingerprint": {
        name: file_sha256(data / name) for name in ("X_test.npy", "y_test.npy")}})
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
    result = run_repo_script("tools/compare_runs.py", a, b)
    assert result.returncode == 0, result.stderr
    assert "0.9500" in result.stdout and "0.9800" in result.stdout
    # class A: 3 positives, 27 negatives; one A record moves A's AUC by up to 1/3, the macro-AUC by (1/3)/2
    assert ("the test split has 30 records, A 3 positives and 27 negatives: one A record can move its AUC by up to "
            "0.333 and the macro-AUC by up to 0.167, so this table cannot separate these runs") in result.stdout
    assert f"paired interval of the macro-AUC difference: not computed, {a / 'predictions.npz'} not found" in result.stdout


@pytest.mark.parametrize("n, positives, note", [
    (1000, [120, 400], None), (1000, [40, 400], "1000 records, A 40 positives and 960 negatives"),
    (300, [100, 150], "300 records, A 100 positives and 200 negatives"),
])
def test_the_note_needs_few_records_or_a_rare_label(tmp_path, n, positives, note):
    y = labels(n, positives)
    result = run_repo_script("tools/compare_runs.py", fake_run(tmp_path, "a", y), fake_run(tmp_path, "b", y))
    assert result.returncode == 0, result.stderr
    assert ("\nnote: " in result.stdout) == (note is not None) and (note is None or note in result.stdout)


def test_runs_with_other_classes_are_refused_in_one_line(tmp_path):
    a = fake_run(tmp_path, "a", labels(30, [3, 15]))
    b = fake_run(tmp_path, "b", labels(30, [3, 15, 5]), classes=["A", "B", "C"])
    result = run_repo_script("tools/compare_runs.py", a, b)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {b} has classes ['A', 'B', 'C'] but {a} has ['A', 'B']; compare runs "
                                     "trained on the same classes")


def test_runs_tested_on_other_records_are_refused_in_one_line(tmp_path):
    a, b = fake_run(tmp_path, "a", labels(30, [3, 15])), fake_run(tmp_path, "b", labels(30, [4, 15]))
    result = run_repo_script("tools/compare_runs.py", a, b)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {b} was tested on other records than {a} (X_test.npy/y_test.npy of "
                                     f"{tmp_path / 'b_data'} and {tmp_path / 'a_data'} differ); compare runs tested "
                                     "on the same test split")


def test_the_paired_interval_reads_both_runs_kept_test_probabilities(tiny_data_dir, tmp_path):
    data, good, weak = with_preprocess_meta(tiny_data_dir), tmp_path / "good", tmp_path / "weak"
    train(tiny_train_config(data, good, epochs=4))
    train(tiny_train_config(data, weak, epochs=1, lr=1e-4))
    aucs = {run: json.loads((run / "metrics.json").read_text())["test"]["macro_auc"] for run in (good, weak)}
    result = run_repo_script("tools/compare_runs.py", weak, good)
    assert result.returncode == 0, result.stderr
    assert ("paired bootstrap over the 48 test records, each run's kept test probabilities (1,000 "
            "resamples, seed 0):") in result.stdout
    # each run kept the test probabilities its metrics.json comes from: the difference is that of the two metrics.json
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"  test macro-AUC {good} - {weak}: "))
    assert f": {aucs[good] - aucs[weak]:+.4f}, 95 % interval [+0." in line and line.endswith("(excludes 0)")
    shutil.copytree(good, tmp_path / "copy")
    result = run_repo_script("tools/compare_runs.py", good, tmp_path / "copy")
    assert result.returncode == 0, result.stderr
    assert (f"test macro-AUC {tmp_path / 'copy'} - {good}: +0.0000, 95 % interval [+0.0000, +0.0000] (includes 0: "
            "no difference shown)") in result.stdout
    (tmp_path / "copy" / "predictions.npz").unlink()
    result = run_repo_script("tools/compare_runs.py", good, tmp_path / "copy")
    assert result.returncode == 0 and (f"paired interval of the macro-AUC difference: not computed, "
                                       f"{tmp_path / 'copy' / 'predictions.npz'} not found") in result.stdout


def test_a_corrupt_or_incomplete_metrics_json_is_named_in_one_line(tmp_path):
    a, b = fake_run(tmp_path, "a", labels(30, [3, 15])), fake_run(tmp_path, "b", labels(30, [3, 15]))
    metrics = b / "metrics.json"
    metrics.write_text(metrics.read_text()[:40])
    result = run_repo_script("tools/compare_runs.py", a, b)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and f"{metrics} is not valid JSON" in lines[0]
    write_json_atomic(metrics, {"test": {}})
    result = run_repo_script("tools/compare_runs.py", a, b)
    assert result.returncode == 2 and f"{metrics} lacks val, epochs" in result.stderr
    assert "Traceback" not in result.stderr and json.loads(metrics.read_text()) == {"test": {}}


def test_an_ensemble_dir_is_compared_like_a_run_by_its_members_mean(tiny_data_dir, tmp_path):
    data, single, ens = with_preprocess_meta(tiny_data_dir), tmp_path / "single", tmp_path / "ens"
    train(tiny_train_config(data, single, epochs=2))
    train_ensemble(tiny_train_config(data, ens, epochs=2), [0, 1])
    aucs = {run: json.loads((run / "metrics.json").read_text())["test"]["macro_auc"] for run in (single, ens)}
    best = "/".join(str(json.loads((ens / f"seed{s}" / "metrics.json").read_text())["best_epoch"]) for s in (0, 1))
    result = run_repo_script("tools/compare_runs.py", single, ens)
    assert result.returncode == 0, result.stderr
    row = next(x for x in result.stdout.splitlines() if x.startswith(str(ens)))
    assert f"{aucs[ens]:.4f}" in row and f" {best} " in row
    # the ensemble kept its members' mean: the difference is that of the two metrics.json
    line = next(x for x in result.stdout.splitlines() if x.startswith(f"  test macro-AUC {ens} - {single}: "))
    assert f": {aucs[ens] - aucs[single]:+.4f}, 95 % interval [" in line
