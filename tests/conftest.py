"""Shared fixtures. The real PTB-XL sample lives in ../shared beside the project; tiny_* fixtures write
tiny synthetic data dirs in the PIPELINE.md layout, fast to train on."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from common.datadir import fingerprint_arrays, write_json_atomic

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real PTB-XL excerpt; when it is missing the test fails on CI (CI is set) and skips elsewhere."""
    if not (SAMPLE / "ptbxl_database.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"PTB-XL sample not found at {SAMPLE}")
        pytest.skip(f"PTB-XL sample not found at {SAMPLE}")
    return SAMPLE


TINY_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def tiny_write_data_dir(path: Path, multilabel: bool = True, n_classes: int = 3,
                        sizes: tuple[int, int, int] = (96, 48, 48), fs: int = 50, length: int = 200,
                        seed: int = 0, inf_in_train: bool = False) -> Path:
    """An easily separable data dir: class k adds a (2 + 3k) Hz sine to every lead over noise and an offset.

    Multi-label targets are independent coin flips per class (float32 multi-hot); single-label ones one class
    index per record (int64). inf_in_train puts +Inf into the first train record, after normalisation stats.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    classes = [f"C{k}" for k in range(n_classes)]
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        if multilabel:
            y = (rng.random((n, n_classes)) < 0.4).astype(np.float32)
            present = y
        else:
            y = rng.integers(0, n_classes, n).astype(np.int64)
            present = np.eye(n_classes, dtype=np.float32)[y]
        phase = rng.uniform(0, 2 * np.pi, (n, n_classes, 1))
        waves = np.sin(2 * np.pi * (2 + 3 * np.arange(n_classes))[None, :, None] * t + phase)
        signal = np.einsum("nk,nkt->nt", present, waves)[:, None, :]
        X = (0.3 * signal + 0.1 * rng.standard_normal((n, len(TINY_LEADS), length)) + 0.05).astype(np.float32)
        arrays[split] = (X, y)
    train_X = arrays["train"][0]
    mean, std = train_X.mean(axis=(0, 2)), train_X.std(axis=(0, 2))
    if inf_in_train:
        train_X[0] = np.inf
    path.mkdir(parents=True, exist_ok=True)
    for split, (X, y) in arrays.items():
        np.save(path / f"X_{split}.npy", X)
        np.save(path / f"y_{split}.npy", y)
    meta = {
        "classes": classes, "task": "tiny", "multilabel": multilabel, "fs": fs, "length": length,
        "leads": TINY_LEADS,
        "normalisation": {"method": "per_lead_zscore", "mean": mean.tolist(), "std": std.tolist()},
        "fingerprint": fingerprint_arrays(path),
    }
    write_json_atomic(path / "meta.json", meta)
    return path


@pytest.fixture
def tiny_make_data_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: tiny_make_data_dir("name", multilabel=..., n_classes=..., sizes=..., fs=..., length=...,
    seed=..., inf_in_train=...) writes a tiny data dir under tmp_path and returns its path."""
    return lambda name, **kwargs: tiny_write_data_dir(tmp_path / name, **kwargs)


@pytest.fixture
def tiny_data_dir(tiny_make_data_dir: Callable[..., Path]) -> Path:
    """A tiny multi-label data dir: 3 classes, 12 leads, 50 Hz, 200 samples, 96/48/48 records."""
    return tiny_make_data_dir("tiny_data")
