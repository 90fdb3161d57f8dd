"""Staged Progressive Data Dropout, step two: the stage data dirs (stage1..3) built from pdd_split.py's buckets.

Each stage folder is a complete data dir whose val/test arrays are links to the source's (docs/PIPELINE.md). The
stages are built together in out_root/.stages and swapped in together; each names its split (pdd.split_id in
meta.json), and a splits.json or index file made from other data, or mixed from two runs, is refused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from common.datadir import (ARRAY_NAMES, META_NAME, SPLITS, DataDir, file_sha256, fingerprint_arrays, load_meta,
                            load_npy, staged_output_dir, write_json_atomic)
from common.files import link_file, load_json, portable_path, stored_path
from common.locks import try_lock
from common.outputs import check_writable, new_folders, refuse_foreign
from common.pdd import BUCKETS, SPLITS_JSON, StaleInputError, class_balance, made_from

log = logging.getLogger("pdd")

STAGE_MODES = ("cumulative", "disjoint")
STAGING = ".stages"  # under out_root: the next stage1..3, complete before they are swapped in
STAGE_FILES = frozenset((*ARRAY_NAMES, META_NAME))


def check_splits_current(data: DataDir, split_dir: Path) -> dict:
    """splits.json of split_dir, refused when it was made from other data than the data dir holds now."""
    path = split_dir / SPLITS_JSON
    splits = load_json(path, f"run pdd_split.py --out_dir {split_dir}",
                       ("data_fingerprint", "n_train", "buckets", "sha256", "score", "checkpoint", "thresholds"))
    if not made_from(data.meta, splits["data_fingerprint"], splits["n_train"]):
        raise StaleInputError(
            f"{path} was made from other data than {data.path} holds now; re-run "
            f"compute_difficulty.py --data_dir {data.path} and then pdd_split.py"
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


def write_subset(source: np.ndarray, dst: Path, rows: np.ndarray, chunk: int = 2048) -> None:
    """Write the given rows of an array (a memory map of a large one) to a new .npy file, in chunks."""
    out = np.lib.format.open_memmap(dst, mode="w+", dtype=source.dtype, shape=(len(rows),) + source.shape[1:])
    for start in range(0, len(rows), chunk):
        out[start : start + chunk] = source[rows[start : start + chunk]]
    out.flush()


def build_stage(source: DataDir, stage_dir: Path, rows: np.ndarray, stage_info: dict,
                final_dir: Path | None = None) -> dict:
    """One stage data dir: train subset written (or linked when it is all of train), val/test linked; the source is
    named relative to where the stage will live (final_dir, when it is built elsewhere first)."""
    data_dir, meta = source.path, source.meta
    with staged_output_dir(stage_dir) as tmp:
        links = {}
        whole_train = len(rows) == meta["counts"]["train"] and np.array_equal(rows, np.arange(len(rows)))
        for split in SPLITS:
            for kind in ("X", "y"):
                name = f"{kind}_{split}.npy"
                if split != "train" or whole_train:
                    links[name] = link_file(data_dir / name, tmp / name)
                else:
                    X, y = source.split(split)
                    write_subset(X if kind == "X" else y, tmp / name, rows)
        train_part = meta["splits"]["train"]
        stage_meta = {
            **meta,
            "counts": {**meta["counts"], "train": int(len(rows))},
            "class_counts": {**meta["class_counts"],
                             "train": class_balance(np.load(tmp / "y_train.npy"), np.arange(len(rows)),
                                                    meta["classes"])},
            "splits": {**meta["splits"], "train": {key: [train_part[key][i] for i in rows] for key in train_part}},
            "fingerprint": fingerprint_arrays(tmp),
            "pdd": {**stage_info, "source_data_dir": portable_path(data_dir, final_dir or stage_dir),
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
            return build_stages(DataDir(data_dir), split_dir, out_root, mode, stage_epochs)
        finally:
            lock.release()


def build_stages(data: DataDir, split_dir: Path, out_root: Path, mode: str,
                 stage_epochs: tuple[int, ...]) -> list[Path]:
    """generate_stages under its lock: check the inputs and the stage folders to replace, build, swap in."""
    splits = check_splits_current(data, split_dir)
    all_rows = stage_rows(load_buckets(split_dir, splits), mode)
    for split in SPLITS:
        data.split(split)  # a truncated array is refused, naming it, before any stage is built
    stage_dirs = [out_root / f"stage{k}" for k in range(1, len(all_rows) + 1)]
    for stage_dir in stage_dirs:
        refuse_foreign(stage_dir, "--out_dir", "", is_stage_dir,
                       "a stage pdd_folder_generator.py built (only its arrays and a meta.json naming it a stage)")
    total = int(sum(stage_epochs))
    scorer = splits["checkpoint"] and portable_path(stored_path(splits["checkpoint"], split_dir), stage_dirs[0])
    infos = [{"stage": k, "mode": mode, "buckets": list(BUCKETS[:k]) if mode == "cumulative" else [BUCKETS[k - 1]],
              "score": splits["score"], "checkpoint": scorer, "thresholds": splits["thresholds"],
              "train_until_epoch": int(sum(stage_epochs[:k])), "schedule_epochs": total, "split_id": split_id(splits)}
             for k in range(1, len(all_rows) + 1)]
    with staged_output_dir(out_root / STAGING) as staging:
        for stage_dir, rows, info in zip(stage_dirs, all_rows, infos):
            build_stage(data, staging / stage_dir.name, rows, info, final_dir=stage_dir)
    swap_in_stages(out_root)
    for stage_dir, rows, info in zip(stage_dirs, all_rows, infos):
        log.info("%s: %d train rows (%s)", stage_dir, len(rows), "+".join(info["buckets"]))
    return stage_dirs
