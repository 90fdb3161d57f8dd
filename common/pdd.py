"""Staged Progressive Data Dropout: difficulty buckets and the stage data dirs built from them.

Files (PIPELINE.md): the data dir holds difficulty.npy + difficulty.json (written by
compute_difficulty.py); pdd_split.py writes splits.json and {easy,medium,hard}_idx.npy; each
stage folder is a complete data dir whose val/test arrays are links to the source's.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from common.datadir import SPLITS, fingerprint_arrays, load_meta, save_npy_atomic, staged_output_dir, write_json_atomic

log = logging.getLogger("pdd")

BUCKETS = ("easy", "medium", "hard")
DIFFICULTY_NPY = "difficulty.npy"
DIFFICULTY_JSON = "difficulty.json"
SPLITS_JSON = "splits.json"
STAGE_MODES = ("cumulative", "disjoint")


class StaleInputError(ValueError):
    """An input made from other data than the data dir holds now; the message names the command to re-run."""


def made_from(meta: dict, data_fingerprint: str | None, n_train: int) -> bool:
    """Whether a derived file recording this fingerprint and train row count was made from the data dir of meta."""
    return data_fingerprint == meta["fingerprint"]["dataset"] and n_train == meta["counts"]["train"]


def load_difficulty(data_dir: Path) -> tuple[np.ndarray, dict]:
    """Scores of X_train rows and their provenance, refused when they were computed on other data."""
    npy, info_path = data_dir / DIFFICULTY_NPY, data_dir / DIFFICULTY_JSON
    if not npy.is_file() or not info_path.is_file():
        raise FileNotFoundError(f"{npy} not found; run compute_difficulty.py --data_dir {data_dir} first")
    info = json.loads(info_path.read_text())
    meta = load_meta(data_dir)
    scores = np.load(npy)
    if not made_from(meta, info.get("data_fingerprint"), len(scores)):
        raise StaleInputError(
            f"{npy} was computed on other data than {data_dir} holds now ({len(scores)} scores, "
            f"{meta['counts']['train']} train rows); re-run compute_difficulty.py --data_dir {data_dir}"
        )
    return scores, info


def strata(y: np.ndarray) -> np.ndarray:
    """One class per record for per-class bucketing: its class index, or its rarest positive class."""
    if y.ndim == 1:
        return y.astype(np.int64)
    counts = y.sum(axis=0)
    rarity = np.where(y > 0, counts[None, :], np.inf)
    return np.where(y.any(axis=1), rarity.argmin(axis=1), -1)


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
    """Bucket per row by score quantiles, over all rows or within each record's class so no bucket loses a class."""
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError(f"--fractions needs three positive numbers (easy medium hard), got {fractions}")
    if not per_class:
        return bucket_rows(scores, fractions)
    bucket = np.empty(len(scores), dtype=np.int64)
    groups = strata(y)
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        bucket[rows] = bucket_rows(scores[rows], fractions)
    return bucket


def class_balance(y: np.ndarray, rows: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Positives per class among the given rows."""
    onehot = y if y.ndim == 2 else np.eye(len(classes))[y]
    return dict(zip(classes, onehot[rows].sum(axis=0).astype(int).tolist()))


def upper_edges(scores: np.ndarray, bucket: np.ndarray) -> list[float]:
    """Highest score of the easy and of the medium bucket: the thresholds a global split used."""
    return [float(scores[bucket == b].max()) if (bucket == b).any() else float("nan") for b in (0, 1)]


def class_thresholds(scores: np.ndarray, bucket: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Per-class upper edges of the easy and medium buckets, for a split made within each record's class."""
    groups = strata(y)
    return {classes[g]: upper_edges(scores[groups == g], bucket[groups == g]) for g in np.unique(groups) if g >= 0}


def split_summary(scores: np.ndarray, bucket: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    """Score range, count and class balance per bucket, for splits.json and the printed table."""
    summary = {}
    for b, name in enumerate(BUCKETS):
        rows = np.flatnonzero(bucket == b)
        summary[name] = {
            "count": int(len(rows)),
            "score_min": float(scores[rows].min()) if len(rows) else None,
            "score_max": float(scores[rows].max()) if len(rows) else None,
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


def plot_histogram(scores: np.ndarray, thresholds: list[float], path: Path, title: str) -> None:
    """Histogram of the scores with the bucket thresholds marked, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(scores, bins=60, color="#4c72b0")
    for t, name in zip(thresholds, ("easy | medium", "medium | hard")):
        ax.axvline(t, color="#c44e52", linestyle="--")
        ax.text(t, ax.get_ylim()[1] * 0.95, f" {name}", color="#c44e52", va="top")
    ax.set_xlabel("difficulty score (higher = harder)")
    ax.set_ylabel("training records")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def split_difficulty(
    data_dir: Path, out_dir: Path, fractions: tuple[float, float, float] = (1, 1, 1), per_class: bool = False
) -> dict:
    """Write splits.json, the three index files and a histogram; return the splits.json content."""
    scores, info = load_difficulty(data_dir)
    meta = load_meta(data_dir)
    y = np.load(data_dir / "y_train.npy")
    bucket = assign_buckets(scores, y, fractions, per_class)
    summary = split_summary(scores, bucket, y, meta["classes"])
    thresholds = upper_edges(scores, bucket)
    out_dir.mkdir(parents=True, exist_ok=True)
    for b, name in enumerate(BUCKETS):
        save_npy_atomic(out_dir / f"{name}_idx.npy", np.flatnonzero(bucket == b).astype(np.int64))
    result = {
        "data_dir": str(data_dir.resolve()),
        "data_fingerprint": meta["fingerprint"]["dataset"],
        "n_train": int(len(scores)),
        "score": info.get("score"),
        "checkpoint": info.get("checkpoint"),
        "fractions": [float(f) for f in fractions],
        "per_class": per_class,
        "thresholds": thresholds,
        "class_thresholds": class_thresholds(scores, bucket, y, meta["classes"]) if per_class else None,
        "buckets": summary,
    }
    write_json_atomic(out_dir / SPLITS_JSON, result)
    plot_histogram(scores, thresholds, out_dir / "difficulty_hist.png", f"difficulty ({info.get('score')})")
    return result


def stage_rows(split_dir: Path, mode: str) -> list[np.ndarray]:
    """Train rows of each stage: cumulative (easy, +medium, +hard) or disjoint (easy, medium, hard)."""
    if mode not in STAGE_MODES:
        raise ValueError(f"--mode must be one of {STAGE_MODES}, got {mode!r}")
    parts = [np.load(split_dir / f"{name}_idx.npy") for name in BUCKETS]
    if mode == "disjoint":
        return [np.sort(p) for p in parts]
    return [np.sort(np.concatenate(parts[: k + 1])) for k in range(len(parts))]


def link_file(src: Path, dst: Path) -> str:
    """Hard-link src to dst, else symlink it; never copy the bytes. Returns how it was linked."""
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        os.symlink(src.resolve(), dst)
        return "symlink"


def write_subset(src: Path, dst: Path, rows: np.ndarray, chunk: int = 2048) -> None:
    """Write the given rows of an .npy array to a new .npy file, in chunks through memory maps."""
    source = np.load(src, mmap_mode="r")
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=source.dtype, shape=(len(rows),) + source.shape[1:])
    for start in range(0, len(rows), chunk):
        out[start : start + chunk] = source[rows[start : start + chunk]]
    out.flush()


def check_splits_current(data_dir: Path, split_dir: Path) -> dict:
    """splits.json of split_dir, refused when it was made from other data than data_dir holds now."""
    path = split_dir / SPLITS_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run pdd_split.py first")
    splits = json.loads(path.read_text())
    meta = load_meta(data_dir)
    if not made_from(meta, splits["data_fingerprint"], splits["n_train"]):
        raise StaleInputError(
            f"{path} was made from other data than {data_dir} holds now; re-run "
            f"compute_difficulty.py --data_dir {data_dir} and then pdd_split.py"
        )
    return splits


def build_stage(data_dir: Path, stage_dir: Path, rows: np.ndarray, stage_info: dict) -> dict:
    """One stage data dir: train subset written (or linked when it is all of train), val/test linked."""
    meta = load_meta(data_dir)
    with staged_output_dir(stage_dir) as tmp:
        links = {}
        whole_train = len(rows) == meta["counts"]["train"] and np.array_equal(rows, np.arange(len(rows)))
        for split in SPLITS:
            for kind in ("X", "y"):
                name = f"{kind}_{split}.npy"
                if split != "train" or whole_train:
                    links[name] = link_file(data_dir / name, tmp / name)
                else:
                    write_subset(data_dir / name, tmp / name, rows)
        train_part = meta["splits"]["train"]
        stage_meta = {
            **meta,
            "counts": {**meta["counts"], "train": int(len(rows))},
            "class_counts": {**meta["class_counts"],
                             "train": class_balance(np.load(tmp / "y_train.npy"), np.arange(len(rows)), meta["classes"])},
            "splits": {**meta["splits"], "train": {key: [train_part[key][i] for i in rows] for key in train_part}},
            "fingerprint": fingerprint_arrays(tmp),
            "pdd": {**stage_info, "source_data_dir": str(data_dir.resolve()),
                    "source_fingerprint": meta["fingerprint"]["dataset"], "train_rows": rows.tolist(), "links": links},
        }
        write_json_atomic(tmp / "meta.json", stage_meta)
    return stage_meta


def generate_stages(
    data_dir: Path, split_dir: Path, out_root: Path, mode: str = "cumulative",
    stage_epochs: tuple[int, ...] = (10, 10, 10),
) -> list[Path]:
    """Build stage1..3 under out_root; each stage's meta.json records its rows, scores and epoch plan."""
    splits = check_splits_current(data_dir, split_dir)
    all_rows = stage_rows(split_dir, mode)
    if len(stage_epochs) != len(all_rows) or min(stage_epochs) < 1:
        raise ValueError(f"--stage_epochs needs {len(all_rows)} positive numbers, got {list(stage_epochs)}")
    total = int(sum(stage_epochs))
    stage_dirs = []
    for k, rows in enumerate(all_rows, start=1):
        stage_dir = out_root / f"stage{k}"
        info = {
            "stage": k, "mode": mode, "buckets": list(BUCKETS[:k]) if mode == "cumulative" else [BUCKETS[k - 1]],
            "score": splits["score"], "checkpoint": splits["checkpoint"], "thresholds": splits["thresholds"],
            "train_until_epoch": int(sum(stage_epochs[:k])), "schedule_epochs": total,
        }
        build_stage(data_dir, stage_dir, rows, info)
        log.info("%s: %d train rows (%s)", stage_dir, len(rows), "+".join(info["buckets"]))
        stage_dirs.append(stage_dir)
    return stage_dirs

