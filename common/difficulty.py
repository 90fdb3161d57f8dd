"""Per-record difficulty of the training set, scored from a trained model's predictions.

Scores (higher = harder), each computed on the same sliding-window evaluation as validation:
  loss  mean binary cross-entropy over classes (cross-entropy for single-label data)
  el2n  L2 distance between predicted probabilities and the label vector (Paul et al., 2021)
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from common.datadir import atomic_file, load_meta, save_npy_atomic, write_json_atomic
from common.pdd import DIFFICULTY_JSON, DIFFICULTY_NPY

SCORES = ("loss", "el2n")


def el2n(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Error L2-norm: ||p - y||_2 per record, with y one-hot encoded for single-label data."""
    target = y if y.ndim == 2 else np.eye(probs.shape[1])[y]
    return np.linalg.norm(probs - target, axis=1)


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
