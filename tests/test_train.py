"""Training stage: model, windows, metrics, checkpoints and resume, faults, CLI and DDP, on tiny synthetic data."""
from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import common.data
import common.loop
import common.step
from common.augment import augment, sliding_window_starts
from common.checkpoint import CheckpointMismatchError, load_checkpoint, load_model, save_checkpoint
from common.config import TrainConfig
from common.data import TrainBatches, choose_placement
from common.datadir import fingerprint_arrays
from common.errors import ConfigError, NonFiniteLossError
from common.evaluate import per_record_loss, predict, predict_as_trained
from common.loop import one_cycle_lr
from common.metrics import summarise, tune_thresholds
from common.model import build_model, count_parameters
from common.predictions import load_predictions
from common.runs import check_reusable
from common.train import train
from conftest import ROOT, TINY_TRAIN_FLAGS, history_rows, run_repo_script, tiny_train_config, train_exit_code

SCRIPT = ROOT / "train_1d_baseline.py"
TINY_FLAGS = TINY_TRAIN_FLAGS
REQUIRED_HISTORY = ["epoch", "train_loss", "val_loss", "val_macro_auc", "lr", "samples_backpropagated", "seconds"]
RUN_FILES = {"best.pt", "last.pt", "history.csv", "metrics.json", "predictions.npz", "training_curves.png",
             "roc_curves.png"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
tiny_config = partial(tiny_train_config, epochs=3)
read_history = history_rows


def run_script(*args: object, timeout: int = 120) -> subprocess.CompletedProcess:
    return run_repo_script("train_1d_baseline.py", *args, timeout=timeout)


def assert_same_training_state(a: dict, b: dict) -> None:
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key, slot in a["optimizer"]["state"].items():
        for name, tensor in slot.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name]), (key, name)
    for key in ("epoch", "samples_backpropagated", "best_epoch", "best_score"):
        assert a["state"][key] == b["state"][key], key


def pairwise_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC as the share of (positive, negative) pairs ranked right, ties half: the Mann-Whitney definition."""
    diff = scores[positive][:, None] - scores[~positive][None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def assert_intervals_are_a_plain_bootstrap(test: dict, probs: np.ndarray, y: np.ndarray) -> None:
    """The test split's 95 % intervals are the 2.5th and 97.5th percentiles over 1,000 resamples of the records
    (numpy's default_rng(0).integers draws), recomputed here pair by pair: per class over the resamples where it
    has both labels, the macro over each resample's classes with both labels."""
    assert test["auc_ci95_bootstrap"] == {"resamples": 1000, "seed": 0}
    targets = y > 0.5 if y.ndim == 2 else np.eye(probs.shape[1], dtype=bool)[y]
    per_class: list[list[float]] = [[] for _ in range(probs.shape[1])]
    macros = []
    for rows in np.random.default_rng(0).integers(0, len(y), (1000, len(y))):
        aucs = [pairwise_auc(probs[rows, k], targets[rows, k]) if 0 < targets[rows, k].sum() < len(rows) else None
                for k in range(probs.shape[1])]
        for k, auc in enumerate(aucs):
            if auc is not None:
                per_class[k].append(auc)
        defined = [auc for auc in aucs if auc is not None]
        if defined:
            macros.append(np.mean(defined))
    assert test["macro_auc_ci95"] == pytest.approx(np.percentile(macros, [2.5, 97.5]), abs=1e-9)
    for k, c in enumerate(test["per_class_auc"]):
        assert test["per_class_auc_ci95"][c] == pytest.approx(np.percentile(per_class[k], [2.5, 97.5]), abs=1e-9), c


def best_test_probs(run: Path, data_dir: Path) -> np.ndarray:
    """The test probabilities of the run's best.pt."""
    model, ckpt = load_model(run / "best.pt")
    return predict_as_trained(model, ckpt, np.load(data_dir / "X_test.npy"))


def test_model_output_shape_and_size() -> None:
    model = build_model()
    # default: 12 leads, 5 classes, width 32, 3 stages of 1 block, kernel 7, stem kernel 15; convs have no bias,
    # each BatchNorm has 2 parameters per channel, a stage-changing block adds a 1x1 conv + BatchNorm shortcut
    stem = 12 * 32 * 15 + 2 * 32                                                 # 5,824
    stage1 = 2 * (32 * 32 * 7 + 2 * 32)                                          # 14,464
    stage2 = 32 * 64 * 7 + 64 * 64 * 7 + 2 * 2 * 64 + 32 * 64 + 2 * 64            # 45,440
    stage3 = 64 * 128 * 7 + 128 * 128 * 7 + 2 * 2 * 128 + 64 * 128 + 2 * 128      # 180,992
    head = 2 * 128 * 5 + 5                                                        # mean+max pooled 256 -> 5: 1,285
    assert count_parameters(model) == stem + stage1 + stage2 + stage3 + head == 248_005
    for length in (250, 1250):
        assert model(torch.randn(3, 12, length)).shape == (3, 5)
    assert build_model(n_leads=1, n_classes=2, width=4, stages=1, blocks=1)(torch.randn(2, 1, 30)).shape == (2, 2)


def test_batches_are_z_scored_windows_of_their_records_and_seeded() -> None:
    X = np.arange(6 * 3 * 40, dtype=np.float32).reshape(6, 3, 40)
    y = np.eye(6, dtype=np.float32)[:, :2]
    norm = {"mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 8.0]}
    for placement in ("ram", "mmap"):
        batches = TrainBatches(X, y, norm, 10, 50.0, False, 0, 0, torch.device("cpu"), placement)
        rows = np.array([4, 0, 5])
        x, target = batches.get_batch(3, 7, rows)
        assert x.shape == (3, 3, 10) and torch.equal(target, torch.from_numpy(y[rows]))
        for row, window in zip(rows, x.numpy()):
            raw = window * np.array(norm["std"])[:, None] + np.array(norm["mean"])[:, None]
            start = int(raw[0, 0]) - int(X[row, 0, 0])
            np.testing.assert_allclose(raw, X[row, :, start:start + 10], atol=1e-4)
        assert torch.equal(batches.get_batch(3, 7, rows)[0], x) and not torch.equal(batches.get_batch(3, 8, rows)[0], x)
    assert sliding_window_starts(40, 10, 10).tolist() == [0, 10, 20, 30]
    assert sliding_window_starts(45, 10, 10).tolist() == [0, 10, 20, 30, 35]
    windows = torch.from_numpy(X[:, :, :10])
    first, again = (augment(windows, 50.0, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(first, again) and first.shape == windows.shape and not torch.equal(first, windows)


def test_predict_matches_manual_windows() -> None:
    torch.manual_seed(0)
    model = build_model(n_classes=3, width=8, stages=2, blocks=1).eval()
    X = np.random.default_rng(0).standard_normal((5, 12, 230)).astype(np.float32)
    norm = {"mean": [0.1] * 12, "std": [2.0] * 12}
    with torch.no_grad():
        logits = torch.stack([model((torch.from_numpy(X[:, :, s:s + 100]) - 0.1) / 2.0) for s in (0, 50, 100, 130)],
                             dim=1)
    expected = {
        (True, "mean_logit"): torch.sigmoid(logits.mean(dim=1)), (True, "max_prob"): torch.sigmoid(logits).amax(dim=1),
        (True, "mean_prob"): torch.sigmoid(logits).mean(dim=1),
        (False, "mean_logit"): torch.softmax(logits.mean(dim=1), dim=1),
        (False, "max_prob"): torch.softmax(logits, dim=2).amax(dim=1),
        (False, "mean_prob"): torch.softmax(logits, dim=2).mean(dim=1),
    }
    for (multilabel, aggregation), want in expected.items():
        got = predict(model, X, norm, multilabel, window=100, stride=50, batch_size=7, aggregation=aggregation)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
    default = predict(model, X, norm, multilabel=True, window=100)
    np.testing.assert_allclose(default, expected[(True, "mean_logit")].numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="aggregation must be one of mean_logit, max_prob, mean_prob, got 'max'"):
        predict(model, X, norm, multilabel=True, window=100, aggregation="max")


def test_metrics_on_hand_made_arrays() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.float32)
    perfect = summarise(y * 0.9 + 0.05, y, True, ["A", "B", "C"])
    assert perfect["per_class_auc"] == {"A": 1.0, "B": 1.0, "C": None}
    assert perfect["macro_auc"] == 1.0 and perfect["classes_without_both_labels"] == ["C"]
    assert perfect["macro_f1"] == 1.0 and perfect["per_class_f1"]["C"] is None
    assert tune_thresholds(np.array([[0.2], [0.4], [0.6], [0.9]]), np.array([[0], [1], [1], [1]])) == [0.4]
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]])
    single = summarise(probs, labels, False, ["A", "B", "C"])
    assert single["accuracy"] == 0.75
    assert single["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    np.testing.assert_allclose(per_record_loss(np.full((2, 3), 0.5), np.zeros((2, 3)), True), np.log(2))
    np.testing.assert_allclose(per_record_loss(probs, labels, False), -np.log([0.8, 0.7, 0.7, 0.2]))


def test_one_cycle_schedule() -> None:
    lrs = [one_cycle_lr(step / 100, 1.0) for step in range(101)]
    assert lrs[0] == pytest.approx(1 / 25) and lrs[30] == pytest.approx(1.0) and lrs[100] == pytest.approx(1e-4)
    assert lrs[:31] == sorted(lrs[:31]) and lrs[30:] == sorted(lrs[30:], reverse=True)
    assert one_cycle_lr(1.5, 1.0) == lrs[100]


def test_training_learns_and_writes_the_run_dir(tiny_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    report = train(tiny_config(tiny_data_dir, run, epochs=6))
    assert RUN_FILES <= {p.name for p in run.iterdir()}
    assert report["test"]["macro_auc"] > 0.9
    rows = read_history(run)
    assert list(rows[0])[:7] == REQUIRED_HISTORY
    assert [int(r["samples_backpropagated"]) for r in rows] == [96 * e for e in range(1, 7)]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val", "test", "best_epoch", "samples_backpropagated", "epochs", "wall_seconds", "samples_per_second",
            "n_params", "config"} <= metrics.keys()
    assert {"macro_auc", "per_class_auc", "macro_f1", "thresholds"} <= metrics["test"].keys()
    assert metrics["test"]["thresholds"] == metrics["val"]["thresholds"]
    assert (run / "roc_curves.png").read_bytes().startswith(PNG_SIGNATURE)
    assert load_checkpoint(run / "best.pt")["state"]["epoch"] == metrics["best_epoch"]
    # the data dir is stored relative to the run dir, so the two can move together, between systems too
    assert load_checkpoint(run / "best.pt")["data_dir"] == metrics["data_dir"] == f"../{tiny_data_dir.name}"
    probs, test_y = best_test_probs(run, tiny_data_dir), np.load(tiny_data_dir / "y_test.npy")
    aucs = [roc_auc_score(test_y[:, k], probs[:, k]) for k in range(3)]
    assert metrics["test"]["per_class_auc"] == pytest.approx(dict(zip(["C0", "C1", "C2"], aucs)), abs=1e-9)
    assert metrics["test"]["macro_auc"] == pytest.approx(np.mean(aucs), abs=1e-9)
    assert_intervals_are_a_plain_bootstrap(metrics["test"], probs, test_y)
    # the run keeps those probabilities, rows named by record (row numbers: this data dir lists no record ids)
    np.testing.assert_allclose(load_predictions(run, "test", [str(i) for i in range(48)]), probs, atol=1e-6)
    model, ckpt = load_model(run / "best.pt")
    np.testing.assert_allclose(load_predictions(run, "val"),
                               predict_as_trained(model, ckpt, np.load(tiny_data_dir / "X_val.npy")), atol=1e-6)
    with pytest.raises(ValueError, match=f"predictions.npz scores other test records than the data dir lists now "
                                         f"\\(48 vs 47 records\\); the data dir was rebuilt after {run} was trained"):
        load_predictions(run, "test", [str(i) for i in range(47)])
    (run / "predictions.npz").unlink()
    with pytest.raises(FileNotFoundError, match="finished before runs kept their predictions; train it again"):
        load_predictions(run, "test")


def test_single_label_reports_accuracy_and_macro_f1(tiny_make_data_dir, tmp_path: Path) -> None:
    data_dir = tiny_make_data_dir("single", multilabel=False)
    report = train(tiny_config(data_dir, tmp_path / "run", epochs=5))
    assert report["test"]["accuracy"] > 0.8 and report["test"]["macro_f1"] > 0.7
    assert report["test"]["macro_auc"] > 0.9 and "thresholds" not in report["test"]
    probs, test_y = best_test_probs(tmp_path / "run", data_dir), np.load(data_dir / "y_test.npy")
    assert report["test"]["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == test_y), abs=1e-12)
    assert_intervals_are_a_plain_bootstrap(report["test"], probs, test_y)


def test_two_plus_two_epochs_equal_four(tiny_data_dir: Path, tmp_path: Path) -> None:
    options = dict(epochs=4, augment=True, dropout=0.3)
    train(tiny_config(tiny_data_dir, tmp_path / "full", **options))
    assert train(tiny_config(tiny_data_dir, tmp_path / "split", stop_after_epoch=2, **options)) is None
    assert load_checkpoint(tmp_path / "split" / "last.pt")["state"]["epoch"] == 2
    assert not (tmp_path / "split" / "metrics.json").exists()
    train(tiny_config(tiny_data_dir, tmp_path / "split", resume=str(tmp_path / "split" / "last.pt"), **options))
    assert_same_training_state(load_checkpoint(tmp_path / "full" / "last.pt"),
                               load_checkpoint(tmp_path / "split" / "last.pt"))
    assert [r["val_loss"] for r in read_history(tmp_path / "full")] == \
        [r["val_loss"] for r in read_history(tmp_path / "split")]


def test_resume_on_another_train_subset_continues_counts(tiny_make_data_dir, tmp_path: Path, capsys) -> None:
    stage1, stage2 = tiny_make_data_dir("stage1", sizes=(64, 48, 48)), tiny_make_data_dir("stage2", seed=1)
    train(tiny_config(stage1, tmp_path / "s1", epochs=2, schedule_epochs=3))
    report = train(tiny_config(stage2, tmp_path / "s2", epochs=3, resume=str(tmp_path / "s1" / "last.pt")))
    assert "resuming on different data" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "s2" / "last.pt")
    assert ckpt["state"]["epoch"] == 3 and ckpt["schedule_epochs"] == 3
    assert ckpt["state"]["samples_backpropagated"] == 2 * 64 + 96 == report["samples_backpropagated"]
    assert [int(r["epoch"]) for r in read_history(tmp_path / "s2")] == [1, 2, 3]
    assert report["best_epoch"] == 3


def test_mismatched_checkpoint_is_refused_naming_classes_and_shape(tiny_data_dir: Path, tiny_make_data_dir,
                                                                   tmp_path: Path) -> None:
    train(tiny_config(tiny_data_dir, tmp_path / "run", epochs=1))
    last = str(tmp_path / "run" / "last.pt")
    other = tiny_make_data_dir("other", n_classes=4, length=240)
    for option in ("resume", "init_from"):
        with pytest.raises(CheckpointMismatchError) as error:
            train(tiny_config(other, tmp_path / "new", schedule_epochs=3, **{option: last}))
        assert "classes: checkpoint ['C0', 'C1', 'C2'], data ['C0', 'C1', 'C2', 'C3']" in str(error.value)
        assert "length: checkpoint 200, data 240" in str(error.value)
        assert not (tmp_path / "new").exists()
    report = train(tiny_config(tiny_data_dir, tmp_path / "init", epochs=1, init_from=last))
    assert report["epochs"] == 1 and report["samples_backpropagated"] == 96


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_data_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, stop_after_epoch=1))
    good = (run / "last.pt").read_bytes()
    calls = []

    def nan_on_third_batch(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
        calls.append(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        return loss * math.nan if len(calls) == 3 else loss

    monkeypatch.setattr(common.step, "loss_fn", nan_on_third_batch)
    with pytest.raises(NonFiniteLossError, match="epoch 2, batch 3"):
        train(tiny_config(tiny_data_dir, run, resume=str(run / "last.pt")))
    assert (run / "last.pt").read_bytes() == good


def refingerprint(data_dir: Path) -> None:
    """Record the arrays' current fingerprint in meta.json, as the stage that wrote them would."""
    meta = json.loads((data_dir / "meta.json").read_text())
    meta["fingerprint"] = fingerprint_arrays(data_dir)
    (data_dir / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_non_finite_values_in_any_split_are_refused_at_load(tiny_data_dir: Path, tmp_path: Path, split: str,
                                                            capsys: pytest.CaptureFixture) -> None:
    X = np.load(tiny_data_dir / f"X_{split}.npy")
    X[5, 3, 17] = np.nan
    np.save(tiny_data_dir / f"X_{split}.npy", X)
    refingerprint(tiny_data_dir)  # as if preprocess.py had written the NaN: only the NaN check can refuse it
    assert train_exit_code(tiny_config(tiny_data_dir, tmp_path / "run")) == 2
    assert capsys.readouterr().err == (f"error: X_{split}.npy in {tiny_data_dir} has NaN/Inf values (first in row 5); "
                                       "repair or drop those records and re-run preprocess.py\n")
    assert not (tmp_path / "run").exists()


def test_bad_inputs_fail_early_naming_the_fix(tiny_data_dir: Path, tiny_make_data_dir, tmp_path: Path,
                                              capsys) -> None:
    def error_of(cfg: TrainConfig) -> str:
        assert train_exit_code(cfg) == 2
        return capsys.readouterr().err

    assert "does not exist" in error_of(tiny_config(tmp_path / "nowhere", tmp_path / "run"))
    both = error_of(tiny_config(tiny_data_dir, tmp_path / "run", batch_size=0, resume="a.pt", init_from="b.pt"))
    assert "--batch_size must be >= 1" in both and "--resume and --init_from exclude each other" in both
    assert "--resume a.pt is not a file" in both
    (tiny_data_dir / "X_test.npy").unlink()
    assert "X_test.npy not found" in error_of(tiny_config(tiny_data_dir, tmp_path / "run"))
    other = tiny_make_data_dir("two_columns")
    np.save(other / "y_val.npy", np.zeros((48, 2), dtype=np.float32))
    refingerprint(other)
    assert "y_val.npy has shape (48, 2)" in error_of(tiny_config(other, tmp_path / "run"))


@pytest.mark.slow
def test_seed_command_line_runs(tiny_data_dir: Path, tmp_path: Path) -> None:
    result = run_script("--data_dir", tiny_data_dir, "--epochs", 2, "--batch_size", 32, "--ckpt_dir",
                        tmp_path / "ckpt", "--augment")
    assert result.returncode == 0, result.stderr
    assert "test macro AUC" in result.stdout
    assert RUN_FILES <= {p.name for p in (tmp_path / "ckpt").iterdir()}


@pytest.mark.slow
@pytest.mark.posix_signals
def test_sigint_saves_a_resumable_checkpoint_that_resumes_exactly(tiny_data_dir: Path, tmp_path: Path) -> None:
    run, epochs = tmp_path / "run", 40
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--data_dir", str(tiny_data_dir), "--ckpt_dir", str(run),
                             "--epochs", str(epochs), *TINY_FLAGS], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, out + err
    assert "saved" in out and "--resume" in out
    stopped = load_checkpoint(run / "last.pt")["state"]
    assert stopped["epoch"] < epochs
    resumed = run_script("--data_dir", tiny_data_dir, "--ckpt_dir", run, "--epochs", epochs, "--resume",
                         run / "last.pt", *TINY_FLAGS)
    assert resumed.returncode == 0, resumed.stderr
    train(tiny_config(tiny_data_dir, tmp_path / "whole", epochs=epochs))
    assert_same_training_state(load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(run / "last.pt"))


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_writes_the_run_dir_once(tiny_data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={port}", str(SCRIPT), "--data_dir", str(tiny_data_dir), "--ckpt_dir", str(run),
         "--epochs", "2", *TINY_FLAGS],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch 1/2:") == 1 and result.stdout.count("test macro AUC") == 1
    assert {p.name for p in run.iterdir()} == RUN_FILES
    assert [int(r["samples_backpropagated"]) for r in read_history(run)] == [96, 192]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["samples_backpropagated"] == 192
    probs, test_y = best_test_probs(run, tiny_data_dir), np.load(tiny_data_dir / "y_test.npy")
    assert metrics["test"]["macro_auc"] == pytest.approx(np.mean([roc_auc_score(test_y[:, k], probs[:, k])
                                                                  for k in range(3)]), abs=1e-9)


@pytest.mark.parametrize("options", [dict(amp="on"), dict(amp="fp16"), dict(workers=2), dict(placement="mmap")],
                         ids=["amp-bf16-on-cpu", "amp-fp16-gradscaler-on-cpu", "workers-2", "memory-mapped"])
@pytest.mark.slow
def test_amp_and_worker_threads_train_and_resume_exactly(tiny_data_dir: Path, tmp_path: Path, options: dict) -> None:
    whole = train(tiny_config(tiny_data_dir, tmp_path / "whole", augment=True, **options))
    assert train(tiny_config(tiny_data_dir, tmp_path / "split", augment=True, stop_after_epoch=1, **options)) is None
    train(tiny_config(tiny_data_dir, tmp_path / "split", augment=True, resume=str(tmp_path / "split" / "last.pt"),
                      **options))
    assert_same_training_state(load_checkpoint(tmp_path / "whole" / "last.pt"),
                               load_checkpoint(tmp_path / "split" / "last.pt"))
    train(tiny_config(tiny_data_dir, tmp_path / "plain", augment=True))
    weights, plain = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("whole", "plain"))
    same_as_plain = all(torch.equal(tensor, plain[name]) for name, tensor in weights.items())
    assert same_as_plain == ("amp" not in options)  # threads and placement change nothing; autocast does
    if options.get("amp") == "fp16":
        assert load_checkpoint(tmp_path / "split" / "last.pt")["scaler"]["scale"] > 0
    assert whole["val"]["macro_auc"] > 0.8


def test_a_checkpoint_with_several_gpu_rng_states_resumes_on_a_cpu(tiny_data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, stop_after_epoch=1))
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4  # as torchrun on 4 GPUs wrote them before
    torch.save(ckpt, run / "last.pt")
    report = train(tiny_config(tiny_data_dir, run, resume=str(run / "last.pt")))
    assert report["epochs"] == 3 and load_checkpoint(run / "last.pt")["rng"]["cuda"] is None


def test_placement_falls_back_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(common.data, "available_memory", lambda: 8 * 2**30)
    assert choose_placement(2 * 2**30, cpu, "auto") == ("ram", "training on the CPU")
    placement, why = choose_placement(5 * 2**30, cpu, "auto")
    assert placement == "mmap" and "exceeds half of the 8.0 GiB of available RAM" in why
    placement, why = choose_placement(2 * 2**30, cpu, "auto", processes_per_node=3)
    assert placement == "mmap" and "x 3 process(es)" in why
    assert choose_placement(2 * 2**30, cpu, "device") == ("ram", "--placement device needs CUDA; training on cpu")
    assert choose_placement(1, cpu, "mmap")[0] == "mmap" and choose_placement(5 * 2**30, cpu, "ram")[0] == "ram"


def test_out_of_gpu_memory_saves_last_pt_and_names_batch_size(tiny_data_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    real_train_epoch, calls = common.loop.train_epoch, []

    def out_of_memory_in_epoch_2(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_train_epoch(*args, **kwargs)

    monkeypatch.setattr(common.loop, "train_epoch", out_of_memory_in_epoch_2)
    run = tmp_path / "run"
    assert train_exit_code(tiny_config(tiny_data_dir, run)) == 2
    err = capsys.readouterr().err
    assert "out of GPU memory at --batch_size 16" in err and "lower --batch_size" in err
    assert f"--resume {run / 'last.pt'}" in err and load_checkpoint(run / "last.pt")["state"]["epoch"] == 1


def test_runs_from_before_the_aggregation_option_keep_scoring_by_the_highest_window(tiny_data_dir: Path,
                                                                                    tmp_path: Path) -> None:
    cfg = tiny_train_config(tiny_data_dir, tmp_path / "old", epochs=2, stop_after_epoch=1)
    train(cfg)
    last = tmp_path / "old" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt["aggregation"], ckpt["config"]["aggregation"]
    save_checkpoint(ckpt, last)
    loaded = load_checkpoint(last)
    assert loaded["aggregation"] == "max_prob" and loaded["config"]["aggregation"] == "max_prob"
    model, ckpt = load_model(last)
    X = np.load(tiny_data_dir / "X_val.npy")
    np.testing.assert_array_equal(predict_as_trained(model, ckpt, X),
                                  predict(model, X, ckpt["normalisation"], True, 100, aggregation="max_prob"))
    metrics = train(replace(cfg, resume=str(last), stop_after_epoch=None, given=()))
    assert metrics["config"]["aggregation"] == "max_prob"  # the resumed run keeps the scoring it selected by
    report = json.loads((tmp_path / "old" / "metrics.json").read_text())
    del report["config"]["aggregation"]
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(report))
    check_reusable(replace(cfg, aggregation="max_prob", stop_after_epoch=None))
    with pytest.raises(ConfigError, match="trained with --aggregation max_prob .* asks for --aggregation mean_logit"):
        check_reusable(replace(cfg, stop_after_epoch=None))
