"""Per-record difficulty of the training set, scored from a trained model's predictions.

Scores (higher = harder), each computed on the same sliding-window evaluation as validation:
  loss  mean binary cross-entropy over classes (cross-entropy for single-label data)
  el2n  L2 distance between predicted probabilities and the label vector (Paul et al., 2021)

A model scores the records it was trained on optimistically; out_of_fold_scores trains one model
per patient-grouped fold of the training set and scores each fold with the model that never saw it.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import check_compatible, load_checkpoint, load_model
from common.datadir import atomic_file, load_meta, load_split, save_npy_atomic, write_json_atomic
from common.evaluate import per_record_loss, predict
from common.pdd import DIFFICULTY_JSON, DIFFICULTY_NPY, build_stage
from common.splits import patient_folds
from common.train import TrainConfig, train

log = logging.getLogger("difficulty")

SCORES = ("loss", "el2n")
CHUNK_RECORDS = 1024


def el2n(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Error L2-norm: ||p - y||_2 per record, with y one-hot encoded for single-label data."""
    target = y if y.ndim == 2 else np.eye(probs.shape[1])[y]
    return np.linalg.norm(probs - target, axis=1)


def scores_from(probs: np.ndarray, y: np.ndarray, multilabel: bool, score: str) -> np.ndarray:
    """The chosen difficulty score per record from aggregated probabilities."""
    if score == "loss":
        return per_record_loss(probs, y, multilabel)
    if score == "el2n":
        return el2n(probs, y)
    raise ValueError(f"--score must be one of {SCORES}, got {score!r}")


def resolve_device(device: str) -> torch.device:
    """auto -> cuda when available, else cpu."""
    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))


def predict_records(ckpt_path: Path, data_dir: Path, rows: np.ndarray | None, batch_size: int,
                    device: torch.device) -> np.ndarray:
    """Probabilities of X_train rows (all by default) under a checkpoint, evaluated as validation is."""
    meta = load_meta(data_dir)
    X, _ = load_split(data_dir, "train")
    model, ckpt = load_model(ckpt_path, device)
    check_compatible(ckpt, meta["classes"], {"leads": len(meta["leads"]), "length": meta["length"], "fs": meta["fs"]})
    rows = np.arange(len(X)) if rows is None else rows
    chunks = []
    for start in tqdm(range(0, len(rows), CHUNK_RECORDS), desc="scoring", unit="chunk"):
        part = rows[start : start + CHUNK_RECORDS]
        chunks.append(predict(model, X[part], ckpt["normalisation"], ckpt["multilabel"],
                              ckpt["input_shape"]["window"], batch_size=batch_size, device=device))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(meta["classes"])), dtype=np.float32)


def out_of_fold_probs(ckpt_path: Path, data_dir: Path, k: int, work_dir: Path, epochs: int | None,
                      batch_size: int, device: torch.device) -> np.ndarray:
    """Probabilities of every training record from a model trained, as the checkpoint's run was, without its fold."""
    if k < 2:
        raise ValueError(f"--oof needs at least 2 folds, got {k}")
    meta = load_meta(data_dir)
    run_config = load_checkpoint(ckpt_path)["config"]
    folds = patient_folds(meta["splits"]["train"]["patient_ids"], k, run_config.get("seed", 0))
    probs = np.zeros((len(folds), len(meta["classes"])), dtype=np.float32)
    for f in range(k):
        held, kept = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
        fold_dir = work_dir / f"fold{f + 1}"
        build_stage(data_dir, fold_dir / "data", kept, {"out_of_fold": f + 1, "of": k})
        config = {field.name: run_config[field.name] for field in dataclasses.fields(TrainConfig) if field.name in run_config}
        config.update(data_dir=str(fold_dir / "data"), ckpt_dir=str(fold_dir / "ckpt"), resume=None,
                      init_from=None, stop_after_epoch=None, schedule_epochs=None,
                      epochs=epochs or run_config["epochs"])
        log.info("out-of-fold %d/%d: training on %d records, scoring %d", f + 1, k, len(kept), len(held))
        train(TrainConfig(**config))
        probs[held] = predict_records(fold_dir / "ckpt" / "best.pt", data_dir, held, batch_size, device)
    return probs


def compute_difficulty(data_dir: Path, ckpt_path: Path, score: str = "loss", oof: int = 0,
                       oof_dir: Path | None = None, oof_epochs: int | None = None, batch_size: int = 512,
                       device: str = "auto") -> np.ndarray:
    """Score every training record of data_dir and write difficulty.npy/.csv/.json into it; return the scores."""
    if score not in SCORES:
        raise ValueError(f"--score must be one of {SCORES}, got {score!r}")
    torch_device = resolve_device(device)
    y = np.load(data_dir / "y_train.npy")
    multilabel = bool(load_meta(data_dir)["multilabel"])
    if oof:
        oof_dir = oof_dir or data_dir.parent / f"{data_dir.name}_oof"
        probs = out_of_fold_probs(ckpt_path, data_dir, oof, oof_dir, oof_epochs, batch_size, torch_device)
    else:
        probs = predict_records(ckpt_path, data_dir, None, batch_size, torch_device)
    scores = scores_from(probs, y, multilabel, score)
    save_difficulty(data_dir, scores, {"score": score, "checkpoint": str(ckpt_path.resolve()),
                                       "out_of_fold": oof or None})
    return scores


def label_names(y: np.ndarray, classes: list[str]) -> list[str]:
    """Readable labels per record: class names joined by ';'."""
    if y.ndim == 1:
        return [classes[i] for i in y]
    return [";".join(classes[i] for i in np.flatnonzero(row)) for row in y]


def save_difficulty(data_dir: Path, scores: np.ndarray, provenance: dict) -> None:
    """Write difficulty.npy (row i scores X_train[i]), difficulty.csv for people, difficulty.json provenance."""
    meta = load_meta(data_dir)
    y = np.load(data_dir / "y_train.npy")
    if len(scores) != len(y):
        raise ValueError(f"{len(scores)} scores for {len(y)} training rows")
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
         "mean": float(scores.mean()), "std": float(scores.std())},
    )
