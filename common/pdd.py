"""Staged Progressive Data Dropout, step one: the difficulty scores split into easy / medium / hard buckets.

Files (docs/PIPELINE.md): the data dir holds difficulty.npy + difficulty.json (written by
compute_difficulty.py); pdd_split.py writes splits.json, {easy,medium,hard}_idx.npy and a histogram, from which
common/pdd_stages.py builds the stage data dirs. difficulty.json and splits.json record the SHA-256 of the arrays
written with them, so a set mixed from two runs (one interrupted between its renames) is refused instead of used.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.datadir import DataDir, file_sha256, load_npy, staged_output_dir, write_json_atomic
from common.files import load_json, portable_path, stored_path
from common.labels import one_hot
from common.outputs import check_writable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("pdd")

BUCKETS = ("easy", "medium", "hard")
DIFFICULTY_NPY = "difficulty.npy"
DIFFICULTY_JSON = "difficulty.json"
SPLITS_JSON = "splits.json"
HISTOGRAM_PNG = "difficulty_hist.png"
BUCKET_COLOURS = ("#55a868", "#dd8452", "#c44e52")


class StaleInputError(ValueError):
    """An input made from other data than the data dir holds now; the message names the command to re-run."""


def made_from(meta: dict, data_fingerprint: str | None, n_train: int) -> bool:
    """Whether a derived file recording this fingerprint and train row count was made from the data dir of meta."""
    return data_fingerprint == meta["fingerprint"]["dataset"] and n_train == meta["counts"]["train"]


def check_scores(scores: np.ndarray, n_train: int, source: str, fix: str) -> None:
    """Refuse scores that are not one finite number per training row, naming `source` and `fix`."""
    if scores.ndim != 1 or scores.dtype.kind not in "fiu" or len(scores) != n_train:
        raise ValueError(f"{source} must hold one number per training row ({n_train}), got {scores.dtype} "
                         f"shape {scores.shape}; {fix}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(f"{source}: {len(bad)} of {n_train} scores are NaN or infinite (rows "
                         f"{', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''}); {fix}")


def load_difficulty(data: DataDir) -> tuple[np.ndarray, dict]:
    """Scores of X_train rows and their provenance; refused when made from other data, mixed or not finite."""
    data_dir = data.path
    npy, info_path = data_dir / DIFFICULTY_NPY, data_dir / DIFFICULTY_JSON
    fix = f"re-run compute_difficulty.py --data_dir {data_dir}"
    if not npy.is_file():
        raise FileNotFoundError(f"{npy} not found; run compute_difficulty.py --data_dir {data_dir} first")
    info = load_json(info_path, fix)
    meta = data.meta
    scores = load_npy(npy)
    if not made_from(meta, info.get("data_fingerprint"), len(scores)):
        raise StaleInputError(
            f"{npy} was computed on other data than {data_dir} holds now ({len(scores)} scores, "
            f"{meta['counts']['train']} train rows); {fix}"
        )
    if info.get("sha256") != file_sha256(npy):
        raise StaleInputError(f"{npy} is not the file {info_path} describes (written by another or an "
                              f"interrupted run); {fix}")
    check_scores(scores, meta["counts"]["train"], str(npy), fix)
    return scores, info


def strata(y: np.ndarray) -> np.ndarray:
    """One class per record for per-class bucketing: its class index, or its rarest positive class."""
    if y.ndim == 1:
        return y.astype(np.int64)
    counts = y.sum(axis=0)
    rarity = np.where(y > 0, counts[None, :], np.inf)
    return np.where(y.any(axis=1), rarity.argmin(axis=1), -1)


def check_fractions(fractions: tuple[float, ...]) -> None:
    """Refuse --fractions other than three finite positive relative sizes."""
    if len(fractions) != 3 or not all(math.isfinite(f) and f > 0 for f in fractions):
        raise ValueError(f"--fractions needs three finite positive numbers, the relative sizes of easy, medium and "
                         f"hard (e.g. 1 1 1 for thirds), got {' '.join(map(str, fractions))}")


def bucket_rows(scores: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Bucket per row (0 easy, 1 medium, 2 hard) by score rank; ties broken by row order, so sizes are exact."""
    order = np.argsort(scores, kind="stable")
    edges = np.round(np.cumsum(fractions) / sum(fractions) * len(scores)).astype(int)
    bucket = np.empty(len(scores), dtype=np.int64)
    bucket[order] = np.searchsorted(edges, np.arange(len(scores)), side="right")
    return bucket


def assign_buckets(
    scores: np.ndarray, y: np.ndarray, fractions: tuple[float, float, float], per_class: bool
) -> np.ndarray:
    """Bucket per row by score quantiles, over all rows or within each record's class; no bucket may be empty."""
    check_fractions(fractions)
    if per_class:
        bucket = np.empty(len(scores), dtype=np.int64)
        groups = strata(y)
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            bucket[rows] = bucket_rows(scores[rows], fractions)
    else:
        bucket = bucket_rows(scores, fractions)
    empty = [name for b, name in enumerate(BUCKETS) if not (bucket == b).any()]
    if empty:
        raise ValueError(f"--fractions {' '.join(map(str, fractions))} leave the {' and '.join(empty)} bucket empty "
                         f"on {len(scores)} training records; give every bucket a larger share")
    return bucket


def class_balance(y: np.ndarray, rows: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Positives per class among the given rows."""
    onehot = one_hot(y, len(classes), multilabel=y.ndim == 2)
    return dict(zip(classes, onehot[rows].sum(axis=0).astype(int).tolist()))


def upper_edges(scores: np.ndarray, bucket: np.ndarray) -> list[float]:
    """Highest score of the easy and of the medium bucket (each non-empty): the thresholds a global split used."""
    return [float(scores[bucket == b].max()) for b in (0, 1)]


def class_thresholds(scores: np.ndarray, bucket: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Per-class upper edges of the easy and medium buckets (null where a small class left one empty)."""
    groups = strata(y)
    return {classes[g]: [float(scores[(groups == g) & (bucket == b)].max())
                         if ((groups == g) & (bucket == b)).any() else None for b in (0, 1)]
            for g in np.unique(groups) if g >= 0}


def split_summary(scores: np.ndarray, bucket: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Score range, count and class balance per bucket, for splits.json and the printed table."""
    summary = {}
    for b, name in enumerate(BUCKETS):
        rows = np.flatnonzero(bucket == b)
        summary[name] = {
            "count": int(len(rows)),
            "score_min": float(scores[rows].min()),
            "score_max": float(scores[rows].max()),
            "class_balance": class_balance(y, rows, classes),
        }
    return summary


def format_table(summary: dict, classes: list[str]) -> str:
    """A small plain-text table of the buckets."""
    head = f"{'bucket':<8}{'count':>7}{'min':>9}{'max':>9}" + "".join(f"{c:>7}" for c in classes)
    lines = [head, "-" * len(head)]
    for name in BUCKETS:
        s = summary[name]
        lines.append(
            f"{name:<8}{s['count']:>7}{s['score_min']:>9.4f}{s['score_max']:>9.4f}"
            + "".join(f"{s['class_balance'][c]:>7}" for c in classes)
        )
    return "\n".join(lines)


def histogram_figure(scores: np.ndarray, bucket: np.ndarray, thresholds: list[float] | None,
                     title: str) -> Figure:
    """Scores stacked by bucket, named in a legend above the axes (never over the bars or each other); log score axis
    when the scores are positive and span over a decade; a global split's thresholds dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = float(scores.min()), float(scores.max())
    log_axis = low > 0 and high > 10 * low
    bins = np.geomspace(low, high, 61) if log_axis else np.linspace(low, max(high, low + 1e-9), 61)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    ax.hist([scores[bucket == b] for b in range(len(BUCKETS))], bins=bins, stacked=True, color=BUCKET_COLOURS,
            label=[f"{name}: {int((bucket == b).sum()):,} records, scores {scores[bucket == b].min():.3g} to "
                   f"{scores[bucket == b].max():.3g}" for b, name in enumerate(BUCKETS)])
    for t in thresholds or []:
        ax.axvline(t, color="#333333", linestyle="--", linewidth=1)
    if log_axis:
        ax.set_xscale("log")
    ax.set_xlabel("difficulty score (higher = harder)" + (", log scale" if log_axis else ""))
    ax.set_ylabel("training records")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), frameon=False, fontsize=9)
    ax.set_title(title, loc="right", fontsize=10)
    fig.tight_layout()
    return fig


def plot_histogram(scores: np.ndarray, bucket: np.ndarray, thresholds: list[float] | None, path: Path,
                   title: str) -> None:
    """histogram_figure saved as PNG."""
    import matplotlib.pyplot as plt

    fig = histogram_figure(scores, bucket, thresholds, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def split_difficulty(
    data_dir: Path, out_dir: Path, fractions: tuple[float, float, float] = (1, 1, 1), per_class: bool = False
) -> dict:
    """Write splits.json, the three index files and a histogram once every input and output is checked; return
    splits.json."""
    check_writable(out_dir, "--out_dir", folder=True)
    for name in [*(f"{bucket}_idx.npy" for bucket in BUCKETS), HISTOGRAM_PNG, SPLITS_JSON]:
        check_writable(out_dir / name, "--out_dir", name)
    data = DataDir(data_dir)
    scores, info = load_difficulty(data)
    meta = data.meta
    y = load_npy(data_dir / "y_train.npy")
    if len(y) != len(scores):
        raise StaleInputError(f"{data_dir / 'y_train.npy'} has {len(y)} rows but meta.json says "
                              f"{len(scores)}; re-run preprocess.py for {data_dir}")
    bucket = assign_buckets(scores, y, fractions, per_class)
    result = {
        "data_dir": portable_path(data_dir, out_dir),
        "data_fingerprint": meta["fingerprint"]["dataset"],
        "n_train": int(len(scores)),
        "score": info.get("score"),
        "checkpoint": info.get("checkpoint") and portable_path(stored_path(info["checkpoint"], data_dir), out_dir),
        "fractions": [float(f) for f in fractions],
        "per_class": per_class,
        "thresholds": upper_edges(scores, bucket),
        "class_thresholds": class_thresholds(scores, bucket, y, meta["classes"]) if per_class else None,
        "buckets": split_summary(scores, bucket, y, meta["classes"]),
    }
    title = f"difficulty ({info.get('score')})" + (", buckets per class" if per_class else "")
    return write_split_files(out_dir, bucket, result, scores, title)


def write_split_files(out_dir: Path, bucket: np.ndarray, result: dict, scores: np.ndarray, title: str) -> dict:
    """Write the index files, histogram and splits.json (with the index files' SHA-256) into a staged out_dir/.split,
    then move them into out_dir, splits.json last; what a killed run left there is cleared by the next."""
    names = [f"{name}_idx.npy" for name in BUCKETS]
    staging = out_dir / ".split"
    with staged_output_dir(staging) as tmp:
        for b, name in enumerate(names):
            np.save(tmp / name, np.flatnonzero(bucket == b).astype(np.int64))
        result = {**result, "sha256": {name: file_sha256(tmp / name) for name in names}}
        plot_histogram(scores, bucket, None if result["per_class"] else result["thresholds"], tmp / HISTOGRAM_PNG,
                       title)
        write_json_atomic(tmp / SPLITS_JSON, result)
    for name in [*names, HISTOGRAM_PNG, SPLITS_JSON]:
        os.replace(staging / name, out_dir / name)
    staging.rmdir()
    return result
