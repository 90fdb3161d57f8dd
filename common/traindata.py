"""A data dir as training reads it (docs/PIPELINE.md): meta.json and the split arrays, memory-mapped and checked
before any training starts, so a bad data dir is refused in one line naming the file and the fix."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.augment import window_samples
from common.datadir import SPLITS, load_meta, load_split
from common.errors import ConfigError
from common.files import stored_path
from common.labels import one_hot

REQUIRED_META = ("classes", "multilabel", "fs", "length", "leads", "normalisation", "fingerprint")


@dataclass
class Data:
    """A checked data dir: arrays per split and what training needs from meta.json."""
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    classes: list[str]
    multilabel: bool
    task: str
    norm: dict
    fingerprint: dict
    input_shape: dict                     # leads, length, fs, window (samples)
    signal: dict                          # lead names in channel order and meta.json's "signal" (units, filter)
    full_train: int                       # train records of the data dir a PDD stage was cut from (else its own)
    record_ids: dict[str, list[str]]      # per split, meta.json's record ids (row numbers where it lists none)
    pdd_split_id: str | None = None       # a PDD stage: the id of the easy/medium/hard split it was cut from


def load_data(data_dir: str | Path, window_seconds: float) -> Data:
    """Load and check a data dir, its arrays memory-mapped (TrainBatches places the train split)."""
    if not Path(data_dir).is_dir():
        raise ConfigError(f"--data_dir {data_dir} does not exist; create it with preprocess.py or fix the path")
    meta = data_meta(data_dir)
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ConfigError(f"{data_dir}/meta.json lacks {missing}; re-run preprocess.py")
    classes, n_leads, length, fs = list(meta["classes"]), len(meta["leads"]), int(meta["length"]), meta["fs"]
    norm = meta["normalisation"]
    std = np.asarray(norm["std"], dtype=np.float64)
    if len(norm["mean"]) != n_leads or len(std) != n_leads or not np.all(np.isfinite(norm["mean"])) \
            or not np.all(std > 0):
        raise ConfigError(f"{data_dir}/meta.json normalisation needs {n_leads} finite means and positive stds; "
                          "re-run preprocess.py")
    window = window_samples(window_seconds, fs)
    if not 1 <= window <= length:
        raise ConfigError(f"--window_seconds {window_seconds} is {window} samples at {fs} Hz but records have "
                          f"{length}; use at most {length / fs:g} s")
    X, y = {}, {}
    for split in SPLITS:
        try:
            X[split], y[split] = load_split(data_dir, split)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        check_split(split, X[split], y[split], n_leads, length, len(classes), bool(meta["multilabel"]))
        bad = first_non_finite(X[split])
        if bad is not None:
            raise ConfigError(f"X_{split}.npy in {data_dir} has NaN/Inf values (first in row {bad}); repair or drop "
                              "those records and re-run preprocess.py")
        y[split] = y[split].astype(np.float32 if meta["multilabel"] else np.int64)
    targets = one_hot(y["val"], len(classes), bool(meta["multilabel"])).sum(axis=0)
    if not np.any((targets > 0) & (targets < len(y["val"]))):
        raise ConfigError(f"no class has both positive and negative records in {data_dir} val split, so the "
                          "validation macro AUC that selects best.pt is undefined; make a larger val split")
    return Data(X=X, y=y, classes=classes, multilabel=bool(meta["multilabel"]), task=str(meta.get("task", "")),
                norm=norm, fingerprint=meta["fingerprint"], pdd_split_id=meta.get("pdd", {}).get("split_id"),
                input_shape={"leads": n_leads, "length": length, "fs": fs, "window": window},
                signal={"leads": list(meta["leads"]), **meta.get("signal", {})},
                full_train=source_train_records(Path(data_dir), meta, len(X["train"])),
                record_ids={split: record_ids(meta, split, len(y[split])) for split in SPLITS})


def record_ids(meta: dict, split: str, rows: int) -> list[str]:
    """The record ids meta.json lists for a split, as strings; row numbers for a data dir that lists none."""
    listed = meta.get("splits", {}).get(split, {}).get("record_ids")
    return [str(i) for i in listed] if listed is not None else [str(i) for i in range(rows)]


def data_meta(data_dir: str | Path) -> dict:
    """meta.json of a data dir; a corrupt one is a ConfigError naming it (a missing one FileNotFoundError)."""
    try:
        return load_meta(data_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def first_non_finite(X: np.ndarray, chunk_bytes: int = 1 << 26) -> int | None:
    """Index of the first record holding NaN/Inf, else None; reads a memory map in bounded chunks."""
    rows = max(1, chunk_bytes // max(X[0].nbytes, 1))
    for first in range(0, len(X), rows):
        finite = np.isfinite(X[first:first + rows]).reshape(min(rows, len(X) - first), -1).all(axis=1)
        if not finite.all():
            return first + int(np.argmin(finite))
    return None


def source_train_records(data_dir: Path, meta: dict, n_train: int) -> int:
    """Train records of the data dir a PDD stage was cut from (the unit of effective epochs), read from that dir's
    meta.json when it is still there and unchanged; else n_train, this dir's own."""
    stage = meta.get("pdd", {})
    source = stored_path(stage.get("source_data_dir", ""), data_dir) / "meta.json"
    if stage.get("source_fingerprint") and source.is_file():
        with contextlib.suppress(ValueError, KeyError, OSError):
            if load_meta(source.parent)["fingerprint"]["dataset"] == stage["source_fingerprint"]:
                return len(load_split(source.parent, "train")[1])
    return n_train


def check_split(split: str, X: np.ndarray, y: np.ndarray, n_leads: int, length: int, n_classes: int,
                multilabel: bool) -> None:
    """Check one split's arrays against meta.json: non-empty, (N, leads, length) signals, targets per task."""
    if len(X) == 0:
        raise ConfigError(f"the {split} split is empty; re-run preprocess.py with other split fractions")
    if X.ndim != 3 or X.shape[1:] != (n_leads, length):
        raise ConfigError(f"X_{split}.npy has shape {X.shape} but meta.json says (N, {n_leads}, {length}); "
                          "re-run preprocess.py")
    if multilabel and y.shape != (len(X), n_classes):
        raise ConfigError(f"y_{split}.npy has shape {y.shape}; a multi-label task needs multi-hot "
                          f"({len(X)}, {n_classes}) for the {n_classes} classes in meta.json")
    if not multilabel and (y.ndim != 1 or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes):
        raise ConfigError(f"y_{split}.npy ({y.dtype}, shape {y.shape}) must hold class indices 0..{n_classes - 1} "
                          "(N,) for a single-label task")
