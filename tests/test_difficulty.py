"""compute_difficulty.py: scores aligned with X_train rows, each its own loss; refusal; out-of-fold scoring."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.preprocess import PreprocessConfig, preprocess
from common.checkpoint import CheckpointMismatchError, load_model
from common.difficulty import compute_difficulty, patient_folds
from common.evaluate import per_record_loss, predict
from common.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(batch_size=32, lr=1e-2, window_seconds=2.5, width=8, stages=2, blocks=1, kernel_size=5)


@pytest.fixture(scope="module")
def trained(sample_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The real sample as a data dir and a tiny model trained on it for two epochs."""
    root = tmp_path_factory.mktemp("difficulty")
    data = root / "baseline"
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=data, val_folds=[8], test_folds=[9], workers=1), "t")
    train(TrainConfig(data_dir=str(data), ckpt_dir=str(root / "ckpt"), epochs=2, **TINY))
    return data, root / "ckpt" / "best.pt"


def test_each_score_is_that_records_own_loss(trained):
    data, ckpt = trained
    result = subprocess.run([sys.executable, str(ROOT / "compute_difficulty.py"), "--data_dir", str(data),
                             "--ckpt", str(ckpt)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    scores = np.load(data / "difficulty.npy")
    X, y = np.load(data / "X_train.npy"), np.load(data / "y_train.npy")
    assert scores.dtype == np.float32 and scores.shape == (len(X),)
    model, meta = load_model(ckpt)
    for row in (0, 7, len(X) - 1):  # scored alone, a record gets the score stored in its row
        probs = predict(model, X[row:row + 1], meta["normalisation"], True, meta["input_shape"]["window"])
        assert scores[row] == pytest.approx(per_record_loss(probs, y[row:row + 1], True)[0], rel=1e-4)
    assert scores.std() > 0
    ids = json.loads((data / "meta.json").read_text())["splits"]["train"]["record_ids"]
    with open(data / "difficulty.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["record_id"]) for r in rows] == ids
    assert float(rows[7]["score"]) == pytest.approx(scores[7], abs=1e-5)
    info = json.loads((data / "difficulty.json").read_text())
    assert info["score"] == "loss" and info["n_train"] == len(X)


def test_el2n_score(trained):
    data, ckpt = trained
    scores = compute_difficulty(data, ckpt, score="el2n")
    model, meta = load_model(ckpt)
    X, y = np.load(data / "X_train.npy"), np.load(data / "y_train.npy")
    probs = predict(model, X[:5], meta["normalisation"], True, meta["input_shape"]["window"])
    np.testing.assert_allclose(scores[:5], np.linalg.norm(probs - y[:5], axis=1), rtol=1e-5)
    assert np.all(scores <= np.sqrt(y.shape[1]))


def test_checkpoint_for_other_classes_is_refused(sample_dir, trained, tmp_path):
    _, ckpt = trained
    other = tmp_path / "form"
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=other, task="form", val_folds=[8], test_folds=[9],
                                workers=1), "t")
    with pytest.raises(CheckpointMismatchError, match="classes: checkpoint"):
        compute_difficulty(other, ckpt)
    assert not (other / "difficulty.npy").exists()


def test_patient_folds_keep_patients_and_balance():
    patients = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"] * 2 + ["f"]
    folds = patient_folds(patients, 2, seed=0)
    for p in set(patients):
        assert len({f for q, f in zip(patients, folds) if q == p}) == 1
    assert sorted(np.bincount(folds).tolist()) == [8, 8]


def test_out_of_fold_scores_come_from_models_that_never_saw_the_record(trained, tmp_path):
    data, ckpt = trained
    scores = compute_difficulty(data, ckpt, oof=2, oof_dir=tmp_path / "oof", oof_epochs=1)
    assert np.isfinite(scores).all() and len(scores) == json.loads((data / "meta.json").read_text())["counts"]["train"]
    ids = json.loads((data / "meta.json").read_text())["splits"]["train"]["record_ids"]
    trained_on = [set(json.loads((tmp_path / "oof" / f"fold{k}" / "data" / "meta.json").read_text())
                      ["splits"]["train"]["record_ids"]) for k in (1, 2)]
    assert trained_on[0].isdisjoint(trained_on[1]) and trained_on[0] | trained_on[1] == set(ids)
    for k in (1, 2):
        assert json.loads((tmp_path / "oof" / f"fold{k}" / "ckpt" / "metrics.json").read_text())["epochs"] == 1
    assert json.loads((data / "difficulty.json").read_text())["out_of_fold"] == 2


def test_staged_training_resumes_across_stages_continuing_epochs(trained, tmp_path):
    from common.pdd import generate_stages, split_difficulty

    data, ckpt = trained
    compute_difficulty(data, ckpt)
    split_difficulty(data, tmp_path / "pdd")
    stages = generate_stages(data, tmp_path / "pdd", tmp_path / "pdd", stage_epochs=(1, 2, 1))
    sizes = [json.loads((s / "meta.json").read_text())["counts"]["train"] for s in stages]
    previous = None
    for k, stage in enumerate(stages, start=1):  # the PIPELINE.md stage commands: no --epochs given
        train(TrainConfig(data_dir=str(stage), ckpt_dir=str(tmp_path / f"stage{k}"),
                          resume=str(previous) if previous else None, **TINY))
        previous = tmp_path / f"stage{k}" / "last.pt"
    metrics = json.loads((tmp_path / "stage3" / "metrics.json").read_text())
    assert metrics["epochs"] == 4
    assert metrics["samples_backpropagated"] == sizes[0] + 2 * sizes[1] + sizes[2]
    assert metrics["config"]["schedule_epochs"] == 4
    with open(tmp_path / "stage3" / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]
    assert [int(r["train_records"]) for r in history] == [sizes[0], sizes[1], sizes[1], sizes[2]]
