"""Staged Progressive Data Dropout: difficulty buckets and the stage data dirs built from them.

Files (docs/PIPELINE.md): the data dir holds difficulty.npy + difficulty.json (written by
compute_difficulty.py); pdd_split.py writes splits.json and {easy,medium,hard}_idx.npy; each
stage folder is a complete data dir whose val/test arrays are links to the source's.
difficulty.json and splits.json record the SHA-256 of the arrays written with them, so a set mixed from two
runs (one interrupted between its renames) is refused instead of used. The stages are built together in
out_root/.stages and swapped in together; each names its split (pdd.split_id in meta.json).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.datadir import (ARRAY_NAMES, META_NAME, SPLITS, file_sha256, fingerprint_arrays, load_meta, load_npy,
                            load_split, staged_output_dir, write_json_atomic)
from common.labels import one_hot
from common.locks import try_lock
from common.outputs import check_writable, new_folders, refuse_foreign

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("pdd")

BUCKETS = ("easy", "medium", "hard")
DIFFICULTY_NPY = "difficulty.npy"
DIFFICULTY_JSON = "difficulty.json"
SPLITS_JSON = "splits.json"
HISTOGRAM_PNG = "difficulty_hist.png"
STAGE_MODES = ("cumulative", "disjoint")
BUCKET_COLOURS = ("#55a868", "#dd8452", "#c44e52")
STAGING = ".stages"  # under out_root: the next stage1..3, complete before they are swapped in
STAGE_FILES = frozenset((*ARRAY_NAMES, META_NAME))


class StaleInputError(ValueError):
    """An input made from other data than the data dir holds now; the message names the command to re-run."""


def load_json(path: Path, fix: str, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object holding `keys`; a missing, truncated or foreign file raises naming it and `fix`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {fix}") from None
    missing = [key for key in keys if not isinstance(content, dict) or key not in content]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; {fix}")
    return content


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


def load_difficulty(data_dir: Path) -> tuple[np.ndarray, dict]:
    """Scores of X_train rows and their provenance; refused when made from other data, mixed or not finite."""
    npy, info_path = data_dir / DIFFICULTY_NPY, data_dir / DIFFICULTY_JSON
    fix = f"re-run compute_difficulty.py --data_dir {data_dir}"
    if not npy.is_file():
        raise FileNotFoundError(f"{npy} not found; run compute_difficulty.py --data_dir {data_dir} first")
    info = load_json(info_path, fix)
    meta = load_meta(data_dir)
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
    scores, info = load_difficulty(data_dir)
    meta = load_meta(data_dir)
    y = load_npy(data_dir / "y_train.npy")
    if len(y) != len(scores):
        raise StaleInputError(f"{data_dir / 'y_train.npy'} has {len(y)} rows but meta.json says "
                              f"{len(scores)}; re-run preprocess.py for {data_dir}")
    bucket = assign_buckets(scores, y, fractions, per_class)
    result = {
        "data_dir": str(data_dir.resolve()),
        "data_fingerprint": meta["fingerprint"]["dataset"],
        "n_train": int(len(scores)),
        "score": info.get("score"),
        "checkpoint": info.get("checkpoint"),
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


def check_splits_current(data_dir: Path, split_dir: Path) -> dict:
    """splits.json of split_dir, refused when it was made from other data than data_dir holds now."""
    path = split_dir / SPLITS_JSON
    splits = load_json(path, f"run pdd_split.py --out_dir {split_dir}",
                       ("data_fingerprint", "n_train", "buckets", "sha256", "score", "checkpoint", "thresholds"))
    meta = load_meta(data_dir)
    if not made_from(meta, splits["data_fingerprint"], splits["n_train"]):
        raise StaleInputError(
            f"{path} was made from other data than {data_dir} holds now; re-run "
            f"compute_difficulty.py --data_dir {data_dir} and then pdd_split.py"
        )
    return splits


def load_buckets(split_dir: Path, splits: dict) -> dict[str, np.ndarray]:
    """The index files, checked against splits.json: its SHA-256 and counts, rows of X_train, each in one bucket."""
    fix = f"re-run pdd_split.py --out_dir {split_dir}"
    n_train, rows = splits["n_train"], {}
    for name in BUCKETS:
        path = split_dir / f"{name}_idx.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; {fix}")
        if file_sha256(path) != splits["sha256"].get(path.name):
            raise StaleInputError(f"{path} is not the file {split_dir / SPLITS_JSON} describes (written by another "
                                  f"or an interrupted run); {fix}")
        idx = load_npy(path)
        count = splits["buckets"].get(name, {}).get("count")
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) != count or not len(idx):
            raise ValueError(f"{path} must hold the {count} row numbers {SPLITS_JSON} counts for {name} (at least "
                             f"one), got {idx.dtype} shape {idx.shape}; {fix}")
        if idx.min() < 0 or idx.max() >= n_train:
            raise ValueError(f"{path} holds rows outside 0..{n_train - 1} (X_train has {n_train}); {fix}")
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"{path} lists a row more than once; {fix}")
        rows[name] = idx
    together = np.concatenate(list(rows.values()))
    if len(np.unique(together)) != len(together) or len(together) != n_train:
        raise ValueError(f"{split_dir}/{{{','.join(BUCKETS)}}}_idx.npy must put each of the {n_train} training rows "
                         f"in exactly one bucket; {fix}")
    return rows


def stage_rows(buckets: dict[str, np.ndarray], mode: str) -> list[np.ndarray]:
    """Train rows of each stage: cumulative (easy, +medium, +hard) or disjoint (easy, medium, hard)."""
    if mode not in STAGE_MODES:
        raise ValueError(f"--mode must be one of {STAGE_MODES}, got {mode!r}")
    parts = [buckets[name] for name in BUCKETS]
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
    source = load_npy(src, mmap_mode="r")
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=source.dtype, shape=(len(rows),) + source.shape[1:])
    for start in range(0, len(rows), chunk):
        out[start : start + chunk] = source[rows[start : start + chunk]]
    out.flush()


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


def split_id(splits: dict) -> str:
    """Name of a split: a digest of the data it was made from and of its index files, so stages of two splits differ."""
    named = json.dumps([splits["data_fingerprint"], splits["sha256"]], sort_keys=True)
    return hashlib.sha256(named.encode()).hexdigest()[:16]


def is_stage_dir(path: Path) -> bool:
    """Whether path is a folder build_stage wrote (or an empty one): only a data dir's files, a meta.json with a pdd
    entry; nothing else is ever replaced by a new stage."""
    if path.is_symlink() or not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    if not names:
        return True
    try:
        return names <= STAGE_FILES and "pdd" in load_meta(path)
    except (OSError, ValueError):
        return False


def swap_in_stages(out_root: Path) -> None:
    """Move the stages in out_root/.stages (there only once all are built) over out_root's, then delete the previous
    ones; a run killed midway leaves .stages behind and the next one finishes the swap, so no mix of two sets stays."""
    ready = out_root / STAGING
    if not ready.is_dir():
        return
    for new in sorted(ready.glob("stage[0-9]")):
        target = out_root / new.name
        if target.exists() or target.is_symlink():
            os.replace(target, ready / f"previous-{new.name}")
        os.replace(new, target)
    shutil.rmtree(ready)


def generate_stages(
    data_dir: Path, split_dir: Path, out_root: Path, mode: str = "cumulative",
    stage_epochs: tuple[int, ...] = (10, 10, 10),
) -> list[Path]:
    """Build stage1..3 under out_root once every input is checked, all in out_root/.stages, then swap them in together;
    each meta.json records rows, scores, epoch plan and the split's name (pdd.split_id). One run at a time."""
    if len(stage_epochs) != len(BUCKETS) or min(stage_epochs) < 1:
        raise ValueError(f"--stage_epochs needs {len(BUCKETS)} positive numbers, got {list(stage_epochs)}")
    check_writable(out_root, "--out_dir", folder=True)
    with new_folders(out_root):
        lock = try_lock(out_root)
        if lock is None:
            raise ValueError(f"another pdd_folder_generator.py is writing stages into {out_root}; let it finish first")
        try:
            swap_in_stages(out_root)  # what a run killed while swapping left ready
            return build_stages(data_dir, split_dir, out_root, mode, stage_epochs)
        finally:
            os.close(lock)


def build_stages(data_dir: Path, split_dir: Path, out_root: Path, mode: str,
                 stage_epochs: tuple[int, ...]) -> list[Path]:
    """generate_stages under its lock: check the inputs and the stage folders to replace, build, swap in."""
    splits = check_splits_current(data_dir, split_dir)
    all_rows = stage_rows(load_buckets(split_dir, splits), mode)
    for split in SPLITS:
        load_split(data_dir, split)  # a truncated array is refused, naming it, before any stage is built
    stage_dirs = [out_root / f"stage{k}" for k in range(1, len(all_rows) + 1)]
    for stage_dir in stage_dirs:
        refuse_foreign(stage_dir, "--out_dir", "", is_stage_dir,
                       "a stage pdd_folder_generator.py built (only its arrays and a meta.json naming it a stage)")
    total = int(sum(stage_epochs))
    infos = [{"stage": k, "mode": mode, "buckets": list(BUCKETS[:k]) if mode == "cumulative" else [BUCKETS[k - 1]],
              "score": splits["score"], "checkpoint": splits["checkpoint"], "thresholds": splits["thresholds"],
              "train_until_epoch": int(sum(stage_epochs[:k])), "schedule_epochs": total, "split_id": split_id(splits)}
             for k in range(1, len(all_rows) + 1)]
    with staged_output_dir(out_root / STAGING) as staging:
        for stage_dir, rows, info in zip(stage_dirs, all_rows, infos):
            build_stage(data_dir, staging / stage_dir.name, rows, info)
    swap_in_stages(out_root)
    for stage_dir, rows, info in zip(stage_dirs, all_rows, infos):
        log.info("%s: %d train rows (%s)", stage_dir, len(rows), "+".join(info["buckets"]))
    return stage_dirs
