"""A finished run's record probabilities on val and test, kept in its run dir (predictions.npz, written by the final
report) with the record ids they belong to, so tools and experiment runners compare runs without re-scoring best.pt."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.datadir import atomic_file

PREDICTIONS = "predictions.npz"
SCORED_SPLITS = ("val", "test")


def save_predictions(run_dir: Path, probs: dict[str, np.ndarray], record_ids: dict[str, list[str]]) -> None:
    """Write predictions.npz: per scored split, the probabilities (N, C) and the N record ids, atomically."""
    arrays = {}
    for split in SCORED_SPLITS:
        arrays[split] = np.asarray(probs[split], dtype=np.float32)
        arrays[f"{split}_ids"] = np.asarray(record_ids[split], dtype=str)
    with atomic_file(Path(run_dir) / PREDICTIONS, "wb") as f:
        np.savez(f, **arrays)


def load_predictions(run_dir: Path, split: str, record_ids: list[str] | None = None) -> np.ndarray:
    """Probabilities (N, C) of a split as the run's final report scored them; refused naming the file when it is
    missing (a run finished before runs kept them) or scored other records than record_ids, when given."""
    path = Path(run_dir) / PREDICTIONS
    if split not in SCORED_SPLITS:
        raise ValueError(f"split must be one of {SCORED_SPLITS}, got {split!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a finished run, or finished before runs kept "
                                "their predictions; train it again")
    with np.load(path) as saved:
        probs, ids = saved[split], saved[f"{split}_ids"].tolist()
    if record_ids is not None and ids != [str(i) for i in record_ids]:
        raise ValueError(f"{path} scores other {split} records than the data dir lists now ({len(ids)} vs "
                         f"{len(record_ids)} records); the data dir was rebuilt after {run_dir} was trained")
    return probs
