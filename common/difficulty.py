"""Per-record difficulty of the training set, scored from a trained model's predictions.

Scores (higher = harder), each computed on the same sliding-window evaluation as validation:
  loss  mean binary cross-entropy over classes (cross-entropy for single-label data)
  el2n  L2 distance between predicted probabilities and the label vector (Paul et al., 2021)

A model scores the records it was trained on optimistically; out_of_fold_probs trains one model
per patient-grouped fold of the training set and scores each fold with the model that never saw it.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common.checkpoint import CheckpointMismatchError, check_compatible, load_model
from common.config import TrainConfig
from common.datadir import DataDir, atomic_file, file_sha256, save_npy_atomic, write_json_atomic
from common.device import resolve_device
from common.evaluate import per_record_loss, predict_as_trained
from common.files import portable_path, stored_path
from common.labels import one_hot
from common.outputs import check_writable, refuse_foreign
from common.pdd import DIFFICULTY_JSON, DIFFICULTY_NPY, check_scores
from common.pdd_stages import build_stage, is_stage_dir
from common.splits import patient_folds
from common.train import train

log = logging.getLogger("difficulty")

SCORES = ("loss", "el2n")
CHUNK_RECORDS = 1024


def el2n(probs: np.ndarray, y: np.ndarray, multilabel: bool) -> np.ndarray:
    """Error L2-norm: ||p - y||_2 per record, with y one-hot encoded for single-label data."""
    return np.linalg.norm(probs - one_hot(y, probs.shape[1], multilabel), axis=1)


def scores_from(probs: np.ndarray, y: np.ndarray, multilabel: bool, score: str) -> np.ndarray:
    """The chosen difficulty score per record from aggregated probabilities."""
    if score == "loss":
        return per_record_loss(probs, y, multilabel)
    if score == "el2n":
        return el2n(probs, y, multilabel)
    raise ValueError(f"--score must be one of {SCORES}, got {score!r}")


def check_options(score: str, oof: int, oof_dir: Path | None, oof_epochs: int | None, batch_size: int,
                  device: str) -> None:
    """Refuse impossible options before anything is read, naming every problem at once."""
    problems = []
    if score not in SCORES:
        problems.append(f"--score must be one of {', '.join(SCORES)}, got {score!r}")
    if batch_size < 1:
        problems.append(f"--batch_size must be >= 1, got {batch_size}")
    if oof < 0 or oof == 1:
        problems.append(f"--oof must be 0 (off) or at least 2 folds, got {oof}")
    if oof_epochs is not None and oof_epochs < 1:
        problems.append(f"--oof_epochs must be >= 1, got {oof_epochs}")
    if not oof and (oof_epochs is not None or oof_dir is not None):
        problems.append("--oof_epochs and --oof_dir only apply with --oof K")
    if device not in ("auto", "cpu", "cuda"):
        problems.append(f"--device must be auto, cpu or cuda, got {device!r}")
    elif device == "cuda" and not torch.cuda.is_available():
        problems.append("--device cuda but this torch sees no CUDA device; use --device cpu")
    if problems:
        raise ValueError("; ".join(problems))


def load_scorer(ckpt_path: Path, data: DataDir, device: torch.device) -> tuple[nn.Module, dict]:
    """The checkpoint's model, refused (naming the file) unless classes, input shape and task type are the data's."""
    meta = data.meta
    model, ckpt = load_model(ckpt_path, device)
    check_compatible(ckpt, ckpt_path, meta["classes"], {"leads": len(meta["leads"]), "length": meta["length"],
                                                        "fs": meta["fs"]},
                     "score with the checkpoint of a run trained on this data dir (or one of the same classes and "
                     "input shape)")
    if bool(ckpt["multilabel"]) != bool(meta["multilabel"]):
        kinds = {True: "multi-label", False: "single-label"}
        raise CheckpointMismatchError(
            f"{ckpt_path} was trained on {kinds[bool(ckpt['multilabel'])]} data but {data.path} is "
            f"{kinds[bool(meta['multilabel'])]}; score with a checkpoint trained on this task")
    return model, ckpt


def warn_if_trained_elsewhere(ckpt: dict, ckpt_path: Path, data: DataDir) -> None:
    """Warn when the checkpoint was trained on other data than the data dir holds: records it never saw look harder."""
    if (ckpt.get("data_fingerprint") or {}).get("dataset") != data.meta["fingerprint"]["dataset"]:
        log.warning("warning: %s was trained on other data (%s) than %s holds now; the records it never trained on "
                    "are scored as if it had, so they look harder than the rest. Score with a checkpoint trained on "
                    "%s, or with --oof K", ckpt_path, stored_path(ckpt.get("data_dir", "?"), ckpt_path.parent), data.path,
                    data.path)


def predict_rows(model: nn.Module, ckpt: dict, X: np.ndarray, rows: np.ndarray, batch_size: int,
                 device: torch.device) -> np.ndarray:
    """Probabilities of the given rows of X under a checkpoint's model, evaluated as validation is."""
    chunks = []
    for start in tqdm(range(0, len(rows), CHUNK_RECORDS), desc="scoring", unit="chunk"):
        part = rows[start : start + CHUNK_RECORDS]
        chunks.append(predict_as_trained(model, ckpt, X[part], batch_size, device))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(ckpt["classes"])), dtype=np.float32)


def out_of_fold_probs(ckpt: dict, data: DataDir, k: int, work_dir: Path, epochs: int | None,
                      batch_size: int, device: torch.device) -> np.ndarray:
    """Probabilities of every training record from a model trained, as the checkpoint's run was, without its fold."""
    data_dir, meta = data.path, data.meta
    X, _ = data.split("train")
    n_patients = len(set(map(str, meta["splits"]["train"]["patient_ids"])))
    if k > n_patients:
        raise ValueError(f"--oof {k} needs at least {k} patients in the training split of {data_dir}, "
                         f"it has {n_patients}")
    for f in range(k):  # each fold's data dir is rebuilt: never over what another command wrote
        refuse_foreign(work_dir / f"fold{f + 1}" / "data", "--oof_dir", f"fold {f + 1}", is_stage_dir,
                       "a fold data dir compute_difficulty.py --oof built")
    run_config = ckpt["config"]
    folds = patient_folds(meta["splits"]["train"]["patient_ids"], k, run_config.get("seed", 0))
    probs = np.zeros((len(folds), len(meta["classes"])), dtype=np.float32)
    for f in range(k):
        held, kept = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        fold_dir = work_dir / f"fold{f + 1}"
        build_stage(data, fold_dir / "data", kept, {"out_of_fold": f + 1, "of": k})
        config = {field.name: run_config[field.name] for field in dataclasses.fields(TrainConfig) if field.name in run_config}
        config.update(data_dir=str(fold_dir / "data"), ckpt_dir=str(fold_dir / "ckpt"), resume=None,
                      init_from=None, stop_after_epoch=None, schedule_epochs=None,
                      epochs=epochs or run_config["epochs"])
        log.info("out-of-fold %d/%d: training on %d records, scoring %d", f + 1, k, len(kept), len(held))
        train(TrainConfig(**config))
        model, fold_ckpt = load_model(fold_dir / "ckpt" / "best.pt", device)
        probs[held] = predict_rows(model, fold_ckpt, X, held, batch_size, device)
    return probs


def compute_difficulty(data_dir: Path, ckpt_path: Path, score: str = "loss", oof: int = 0,
                       oof_dir: Path | None = None, oof_epochs: int | None = None, batch_size: int = 512,
                       device: str = "auto") -> np.ndarray:
    """Score every training record of data_dir (options, data and checkpoint checked first), write
    difficulty.npy/.csv/.json into it and return the scores."""
    check_options(score, oof, oof_dir, oof_epochs, batch_size, device)
    torch_device = resolve_device(device)
    data = DataDir(data_dir)
    meta = data.meta
    for name in (DIFFICULTY_NPY, "difficulty.csv", DIFFICULTY_JSON):  # before any scoring, not after
        check_writable(data_dir / name, "--data_dir", name)
    X, y = data.split("train")
    model, ckpt = load_scorer(ckpt_path, data, torch_device)
    if oof:
        oof_dir = oof_dir or data_dir.parent / f"{data_dir.name}_oof"
        probs = out_of_fold_probs(ckpt, data, oof, oof_dir, oof_epochs, batch_size, torch_device)
    else:
        warn_if_trained_elsewhere(ckpt, ckpt_path, data)
        probs = predict_rows(model, ckpt, X, np.arange(len(X)), batch_size, torch_device)
    scores = scores_from(probs, y, bool(meta["multilabel"]), score)
    save_difficulty(data, scores, {"score": score, "checkpoint": portable_path(ckpt_path, data_dir),
                                       "out_of_fold": oof or None})
    return scores


def label_names(y: np.ndarray, classes: list[str]) -> list[str]:
    """Readable labels per record: class names joined by ';'."""
    if y.ndim == 1:
        return [classes[i] for i in y]
    return [";".join(classes[i] for i in np.flatnonzero(row)) for row in y]


def save_difficulty(data: DataDir, scores: np.ndarray, provenance: dict) -> None:
    """Write difficulty.npy (row i scores X_train[i]), difficulty.csv, then difficulty.json (provenance and the
    npy's SHA-256) into the data dir; non-finite scores are refused first."""
    data_dir, meta = data.path, data.meta
    _, y = data.split("train")
    check_scores(np.asarray(scores), len(y), f"the scores of {data_dir} by {provenance.get('checkpoint')}",
                 "check those records of X_train for NaN/Inf values, or the checkpoint for NaN weights")
    with atomic_file(data_dir / "difficulty.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "record_id", "labels", "score"])
        ids = meta["splits"]["train"]["record_ids"]
        for i, (rid, labels, score) in enumerate(zip(ids, label_names(y, meta["classes"]), scores)):
            writer.writerow([i, rid, labels, f"{score:.6f}"])
    save_npy_atomic(data_dir / DIFFICULTY_NPY, scores.astype(np.float32))
    write_json_atomic(
        data_dir / DIFFICULTY_JSON,
        {**provenance, "data_fingerprint": meta["fingerprint"]["dataset"], "n_train": int(len(scores)),
         "sha256": file_sha256(data_dir / DIFFICULTY_NPY), "mean": float(scores.mean()), "std": float(scores.std())},
    )
