"""Ensembles (train_1d_baseline.py --seeds): members trained into one folder, their mean scored like a single run,
reuse and continuation by the same command, refusals, and predict.py on the ensemble dir."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from common.checkpoint import load_model
from common.ensemble import train_ensemble
from common.errors import ConfigError
from common.evaluate import predict_as_trained
from common.inference import run_predict
from common.metrics import tune_thresholds
from common.train import train
from conftest import TINY_LEADS, TINY_TRAIN_FLAGS, history_rows, run_repo_script, tiny_train_config
from train_1d_baseline import parse_command


def member_mean(ens: Path, seeds: list[int], X: np.ndarray) -> np.ndarray:
    """The members' probabilities on X, averaged: what the ensemble must report."""
    probs = []
    for seed in seeds:
        model, ckpt = load_model(ens / f"seed{seed}" / "best.pt", "cpu")
        probs.append(predict_as_trained(model, ckpt, X))
    return np.mean(probs, axis=0)


def macro_auc(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([roc_auc_score(y[:, k], probs[:, k]) for k in range(y.shape[1])]))


def test_ensemble_metrics_are_those_of_the_members_mean(tiny_data_dir: Path, tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    report = train_ensemble(tiny_train_config(tiny_data_dir, ens, epochs=2), [0, 3])
    assert json.loads((ens / "metrics.json").read_text()) == json.loads(json.dumps(report))
    y_val, y_test = np.load(tiny_data_dir / "y_val.npy"), np.load(tiny_data_dir / "y_test.npy")
    val = member_mean(ens, [0, 3], np.load(tiny_data_dir / "X_val.npy"))
    test = member_mean(ens, [0, 3], np.load(tiny_data_dir / "X_test.npy"))
    assert report["val"]["macro_auc"] == pytest.approx(macro_auc(val, y_val), abs=1e-6)
    assert report["test"]["macro_auc"] == pytest.approx(macro_auc(test, y_test), abs=1e-6)
    assert report["val"]["thresholds"] == pytest.approx(tune_thresholds(val, y_val), abs=1e-6)
    members = [json.loads((ens / f"seed{s}" / "metrics.json").read_text()) for s in (0, 3)]
    assert [m["config"]["seed"] for m in members] == [0, 3]
    assert members[0]["val"]["macro_auc"] != members[1]["val"]["macro_auc"]  # two seeds, two models
    assert report["checkpoints"] == ["seed0/best.pt", "seed3/best.pt"]
    assert report["samples_backpropagated"] == sum(m["samples_backpropagated"] for m in members)
    assert report["n_params"] == 2 * members[0]["n_params"]
    assert report["wall_seconds"] >= sum(m["wall_seconds"] for m in members)
    assert (ens / "roc_curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_same_command_reuses_finished_members_and_continues_an_interrupted_one(tiny_data_dir: Path,
                                                                                tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    cfg = tiny_train_config(tiny_data_dir, ens, epochs=3)
    train(replace(cfg, seed=0, ckpt_dir=str(ens / "seed0")))
    train(replace(cfg, seed=1, ckpt_dir=str(ens / "seed1"), stop_after_epoch=1))
    finished = (ens / "seed0" / "best.pt").stat().st_mtime_ns
    first_epoch = history_rows(ens / "seed1")[0]
    train_ensemble(cfg, [0, 1])
    assert (ens / "seed0" / "best.pt").stat().st_mtime_ns == finished
    rows = history_rows(ens / "seed1")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[0] == first_epoch


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0", "0"], "--seeds must be distinct numbers >= 0, got 0 0"),
    (["--seeds", "0", "1", "--seed", "4"], "--seed and --seeds both given"),
    (["--seeds", "0", "1", "--resume", "x/last.pt"], "--resume continue or start one run, not an ensemble"),
])
def test_what_an_ensemble_cannot_be_is_refused(tiny_data_dir: Path, tmp_path: Path, args: list[str],
                                              message: str) -> None:
    cfg, seeds = parse_command(["--data_dir", str(tiny_data_dir), "--ckpt_dir", str(tmp_path / "e"), *args])
    with pytest.raises(ConfigError, match=message):
        train_ensemble(cfg, seeds)
    assert not (tmp_path / "e").exists()


def test_an_ensemble_whose_first_member_is_refused_at_its_start_leaves_no_folder(tiny_data_dir: Path,
                                                                                 tmp_path: Path) -> None:
    cfg = tiny_train_config(tiny_data_dir, tmp_path / "runs" / "ens", epochs=2, pdd="infobatch", pdd_delta=0.9)
    with pytest.raises(ConfigError, match="--pdd_delta 0.9 leaves no full-data epoch in 2 epochs"):
        train_ensemble(cfg, [0, 1])
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny_data"]


def test_a_single_run_dir_or_a_member_of_other_settings_is_refused(tiny_data_dir: Path, tmp_path: Path) -> None:
    train(tiny_train_config(tiny_data_dir, tmp_path / "single", epochs=1))
    with pytest.raises(ConfigError, match="holds a single run .*choose another --ckpt_dir"):
        train_ensemble(tiny_train_config(tiny_data_dir, tmp_path / "single", epochs=1), [0, 1])
    train(tiny_train_config(tiny_data_dir, tmp_path / "ens" / "seed1", epochs=1, seed=1))
    with pytest.raises(ConfigError, match="seed1 was trained with --epochs 1 .*this ensemble asks for --epochs 2; "
                                          "use another --ckpt_dir"):
        train_ensemble(tiny_train_config(tiny_data_dir, tmp_path / "ens", epochs=2), [0, 1])
    assert not (tmp_path / "ens" / "seed0").exists()


@pytest.mark.slow
def test_command_line_ensemble_then_predict_with_its_dir(tiny_data_dir: Path, tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    done = run_repo_script("train_1d_baseline.py", "--data_dir", tiny_data_dir, "--ckpt_dir", ens, "--epochs", 1,
                           "--seeds", 0, 1, *TINY_TRAIN_FLAGS)
    assert done.returncode == 0, done.stderr
    assert f"ensemble dir {ens}: mean of 2 members (seeds 0 1" in done.stdout
    report = json.loads((ens / "metrics.json").read_text())
    assert run_predict([ens], tiny_data_dir / "X_test.npy", tmp_path / "p.csv", 50, TINY_LEADS) == 0
    table = pd.read_csv(tmp_path / "p.csv", dtype={"labels": str}, keep_default_na=False)
    probs = table[report["classes"]].to_numpy()
    np.testing.assert_allclose(probs, member_mean(ens, [0, 1], np.load(tiny_data_dir / "X_test.npy")), atol=1e-5)
    cut = np.asarray(report["val"]["thresholds"])
    assert table["labels"].tolist() == [";".join(c for c, hit in zip(report["classes"], row) if hit)
                                        for row in probs >= cut]
    assert cut.tolist() != pytest.approx(np.mean([json.loads((ens / f"seed{s}" / "metrics.json").read_text())
                                                  ["val"]["thresholds"] for s in (0, 1)], axis=0).tolist())
    with pytest.raises(ValueError, match="is a folder but not an ensemble"):
        run_predict([ens / "seed0"], tiny_data_dir / "X_test.npy", tmp_path / "q.csv", 50, TINY_LEADS)
