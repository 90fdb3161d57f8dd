"""compute_difficulty.py: scores aligned with X_train rows, each its own loss; EL2N by hand; refusal of bad options,
files and checkpoints; out-of-fold scoring by the model that never saw the record."""
import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from common.checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint, load_model
from common.config import TrainConfig
from common.difficulty import compute_difficulty, el2n, patient_folds, scores_from
from common.evaluate import per_record_loss, predict
from common.preprocess import PreprocessConfig, preprocess
from common.train import train
from conftest import TINY_TRAIN, run_repo_script, tiny_train_config, tiny_write_data_dir, with_preprocess_meta


@pytest.fixture(scope="module")
def trained(sample_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The real sample as a data dir and a tiny model trained on it for two epochs."""
    root = tmp_path_factory.mktemp("difficulty")
    data = root / "baseline"
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=data, val_folds=[8], test_folds=[9], workers=1), "t")
    train(TrainConfig(data_dir=str(data), ckpt_dir=str(root / "ckpt"), epochs=2, **TINY_TRAIN))
    return data, root / "ckpt" / "best.pt"


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny multi-label data dir with preprocess.py's meta.json entries, and a tiny model trained one epoch on it."""
    root = tmp_path_factory.mktemp("tiny_difficulty")
    data = with_preprocess_meta(tiny_write_data_dir(root / "data"))
    train(tiny_train_config(data, root / "ckpt", epochs=1))
    return data, root / "ckpt" / "best.pt"


@pytest.fixture
def same_data(tmp_path) -> Path:
    """A fresh copy of tiny_trained's data dir (same arrays, so the same fingerprint), for tests that write to it."""
    return with_preprocess_meta(tiny_write_data_dir(tmp_path / "same"))


def difficulty_files(data_dir: Path) -> list[str]:
    """The difficulty outputs (and their temporary files) present in a data dir."""
    return sorted(p.name for p in data_dir.iterdir() if "difficulty" in p.name)


@pytest.mark.slow
def test_each_score_is_that_records_own_loss(trained):
    data, ckpt = trained
    result = run_repo_script("compute_difficulty.py", "--data_dir", data, "--ckpt", ckpt)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr  # the checkpoint was trained on this data dir
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


def test_el2n_by_hand():
    probs = np.array([[0.9, 0.2, 0.1], [0.5, 0.5, 0.0]], dtype=np.float32)
    multi_hot = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float32)
    # sqrt(0.1^2 + 0.2^2 + 0.1^2) = sqrt(0.06); sqrt(0.5^2 + 0.5^2 + 1^2) = sqrt(1.5)
    np.testing.assert_allclose(el2n(probs, multi_hot, multilabel=True), [0.2449490, 1.2247449], rtol=1e-6)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    # class 0: sqrt(0.3^2 + 0.2^2 + 0.1^2) = sqrt(0.14); class 2: sqrt(0.1^2 + 0.3^2 + 0.4^2) = sqrt(0.26)
    np.testing.assert_allclose(scores_from(probs, np.array([0, 2]), False, "el2n"), [0.3741657, 0.5099020],
                               rtol=1e-6)


def test_checkpoint_for_other_classes_is_refused(sample_dir, trained, tmp_path):
    _, ckpt = trained
    other = tmp_path / "form"
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=other, task="form", val_folds=[8], test_folds=[9],
                                workers=1), "t")
    with pytest.raises(CheckpointMismatchError, match=f"{ckpt} does not match the data dir .*classes: checkpoint"):
        compute_difficulty(other, ckpt)
    assert not (other / "difficulty.npy").exists()


def test_checkpoint_of_the_other_task_type_is_refused(tiny_trained, tmp_path):
    _, ckpt = tiny_trained  # multi-label, classes C0 C1 C2
    single = with_preprocess_meta(tiny_write_data_dir(tmp_path / "single", multilabel=False))
    with pytest.raises(CheckpointMismatchError, match=f"{ckpt} was trained on multi-label data but {single} is "
                                                      "single-label"):
        compute_difficulty(single, ckpt)
    assert difficulty_files(single) == []


def test_checkpoint_trained_on_other_data_is_scored_with_a_warning(tiny_trained, same_data, tmp_path, caplog):
    data, ckpt = tiny_trained
    other = with_preprocess_meta(tiny_write_data_dir(tmp_path / "other", seed=1))
    compute_difficulty(other, ckpt)
    assert f"warning: {ckpt} was trained on other data ({data}) than {other} holds now" in caplog.text
    assert "scored as if it had" in caplog.text and (other / "difficulty.npy").is_file()
    caplog.clear()
    compute_difficulty(same_data, ckpt)
    assert "warning" not in caplog.text


@pytest.mark.parametrize("options, message", [
    (dict(batch_size=0), "--batch_size must be >= 1, got 0"),
    (dict(oof=1), "--oof must be 0 (off) or at least 2 folds, got 1"),
    (dict(oof=-2), "--oof must be 0 (off) or at least 2 folds, got -2"),
    (dict(oof=2, oof_epochs=0), "--oof_epochs must be >= 1, got 0"),
    (dict(oof_epochs=2), "--oof_epochs and --oof_dir only apply with --oof K"),
    (dict(oof=500), "--oof 500 needs at least 500 patients"),
])
def test_impossible_options_are_refused_before_anything_is_written(tiny_trained, options, message):
    data, ckpt = tiny_trained
    with pytest.raises(ValueError, match=re.escape(message)):
        compute_difficulty(data, ckpt, **options)
    assert difficulty_files(data) == [] and not (data.parent / f"{data.name}_oof").exists()


@pytest.mark.slow
def test_batch_size_0_on_the_command_line_exits_2_with_one_line(tiny_trained):
    data, ckpt = tiny_trained
    result = run_repo_script("compute_difficulty.py", "--data_dir", data, "--ckpt", ckpt, "--batch_size", "0")
    assert result.returncode == 2 and result.stderr.strip() == "error: --batch_size must be >= 1, got 0"
    assert difficulty_files(data) == []


def write_bad_checkpoint(kind: str, good: Path, path: Path) -> Path:
    """A file that is not a usable checkpoint: missing, empty, truncated, random bytes, text, bare state_dict, or a
    pickle whose loading would run code (it would create path.with_suffix('.ran'))."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "bare state_dict":
        torch.save(load_checkpoint(good)["model"], path)
    elif kind == "code payload":
        torch.save({"model": Payload(str(path.with_suffix(".ran")))}, path)
    return path


class Payload:
    """Unpickling this runs a shell command: a checkpoint must never be loaded with code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "random bytes", "text", "bare state_dict",
                                  "code payload"])
@pytest.mark.slow
def test_a_file_that_is_not_a_checkpoint_gets_one_line_and_exit_2(tiny_trained, tmp_path, kind):
    data, good = tiny_trained
    bad = write_bad_checkpoint(kind, good, tmp_path / "bad.pt")
    result = run_repo_script("compute_difficulty.py", "--data_dir", data, "--ckpt", bad)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in result.stderr
    with pytest.raises(CheckpointError, match=re.escape(str(bad))):
        compute_difficulty(data, bad, oof=2, oof_dir=tmp_path / "oof")
    assert difficulty_files(data) == [] and not (tmp_path / "oof").exists() and not bad.with_suffix(".ran").exists()


@pytest.mark.parametrize("name", ["X_train.npy", "y_train.npy", "meta.json"])
def test_a_truncated_data_file_is_named(tiny_trained, tmp_path, name):
    _, ckpt = tiny_trained
    data = with_preprocess_meta(tiny_write_data_dir(tmp_path / "data"))
    (data / name).write_bytes((data / name).read_bytes()[:100])
    with pytest.raises(ValueError, match=re.escape(str(data / name))):
        compute_difficulty(data, ckpt)
    assert difficulty_files(data) == []


def test_non_finite_scores_are_never_written(tiny_trained, tmp_path):
    _, ckpt = tiny_trained
    data = with_preprocess_meta(tiny_write_data_dir(tmp_path / "data", inf_in_train=True))
    with pytest.raises(ValueError, match=r"1 of 96 scores are NaN or infinite \(rows 0\)"):
        compute_difficulty(data, ckpt)
    assert difficulty_files(data) == []


def test_patient_folds_keep_patients_and_balance():
    patients = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"] * 2 + ["f"]
    folds = patient_folds(patients, 2, seed=0)
    for p in set(patients):
        assert len({f for q, f in zip(patients, folds) if q == p}) == 1
    assert sorted(np.bincount(folds).tolist()) == [8, 8]


def test_each_out_of_fold_score_comes_from_the_fold_model_that_never_trained_on_the_record(tiny_trained, same_data,
                                                                                        tmp_path):
    data, ckpt = same_data, tiny_trained[1]
    scores = compute_difficulty(data, ckpt, oof=2, oof_dir=tmp_path / "oof", oof_epochs=1)
    meta = json.loads((data / "meta.json").read_text())
    ids, patients = meta["splits"]["train"]["record_ids"], meta["splits"]["train"]["patient_ids"]
    X, y = np.load(data / "X_train.npy"), np.load(data / "y_train.npy")
    unseen, trained_on = [], []
    for k in (1, 2):
        fold_data = json.loads((tmp_path / "oof" / f"fold{k}" / "data" / "meta.json").read_text())
        fold_ckpt = load_checkpoint(tmp_path / "oof" / f"fold{k}" / "ckpt" / "best.pt")
        assert fold_ckpt["data_fingerprint"]["dataset"] == fold_data["fingerprint"]["dataset"]  # trained on that fold
        assert fold_ckpt["config"]["epochs"] == 1
        trained_on.append(set(fold_data["splits"]["train"]["record_ids"]))
        model = load_model(tmp_path / "oof" / f"fold{k}" / "ckpt" / "best.pt")[0]
        probs = predict(model, X, fold_ckpt["normalisation"], True, fold_ckpt["input_shape"]["window"])
        unseen.append(per_record_loss(probs, y, True))
    assert trained_on[0].isdisjoint(trained_on[1]) and trained_on[0] | trained_on[1] == set(ids)
    for p in set(patients):  # whole patients per fold
        assert len({k for k in (0, 1) for i, q in zip(ids, patients) if q == p and i in trained_on[k]}) == 1
    scorer = np.array([0 if rid not in trained_on[0] else 1 for rid in ids])
    np.testing.assert_allclose(scores, np.where(scorer == 0, unseen[0], unseen[1]), rtol=1e-5)
    assert not np.allclose(scores, np.where(scorer == 0, unseen[1], unseen[0]), rtol=1e-3)  # the models disagree
    assert json.loads((data / "difficulty.json").read_text())["out_of_fold"] == 2


def test_out_of_fold_scoring_never_replaces_a_folder_it_did_not_write(tiny_trained, same_data, tmp_path):
    data, ckpt = same_data, tiny_trained[1]
    mine = tmp_path / "oof" / "fold2" / "data"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=re.escape(f"--oof_dir fold 2 {mine} exists and is not a fold data dir "
                                                   f"compute_difficulty.py --oof built; move it away")):
        compute_difficulty(data, ckpt, oof=2, oof_dir=tmp_path / "oof", oof_epochs=1)
    assert (mine / "notes.txt").read_text() == "mine" and [p.name for p in (tmp_path / "oof").iterdir()] == ["fold2"]
    assert difficulty_files(data) == []


def test_an_output_that_is_a_folder_is_refused_before_scoring(tiny_trained, same_data, monkeypatch):
    (same_data / "difficulty.csv").mkdir()
    monkeypatch.setattr("common.difficulty.predict_rows", lambda *a: pytest.fail("scored before checking its outputs"))
    with pytest.raises(ValueError, match=re.escape(f"--data_dir difficulty.csv {same_data / 'difficulty.csv'} is a "
                                                   f"folder, not a file")):
        compute_difficulty(same_data, tiny_trained[1])
    assert difficulty_files(same_data) == ["difficulty.csv"]


@pytest.mark.slow
def test_staged_training_resumes_across_stages_continuing_epochs(trained, tmp_path):
    from common.pdd import split_difficulty
    from common.pdd_stages import generate_stages

    data, ckpt = trained
    compute_difficulty(data, ckpt)
    split_difficulty(data, tmp_path / "pdd")
    stages = generate_stages(data, tmp_path / "pdd", tmp_path / "pdd", stage_epochs=(1, 2, 1))
    sizes = [json.loads((s / "meta.json").read_text())["counts"]["train"] for s in stages]
    previous = None
    for k, stage in enumerate(stages, start=1):  # the docs/PIPELINE.md stage commands: no --epochs given
        train(TrainConfig(data_dir=str(stage), ckpt_dir=str(tmp_path / f"stage{k}"),
                          resume=str(previous) if previous else None, **TINY_TRAIN))
        previous = tmp_path / f"stage{k}" / "last.pt"
    metrics = json.loads((tmp_path / "stage3" / "metrics.json").read_text())
    assert metrics["epochs"] == 4
    assert metrics["samples_backpropagated"] == sizes[0] + 2 * sizes[1] + sizes[2]
    assert metrics["config"]["schedule_epochs"] == 4
    with open(tmp_path / "stage3" / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4]
    assert [int(r["train_records"]) for r in history] == [sizes[0], sizes[1], sizes[1], sizes[2]]
