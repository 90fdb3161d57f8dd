"""preprocess.py's --out_dir made safe: refused when it would bury the raw data or replace what another run or the
user wrote there, locked while a run writes it, and the finished arrays moved in with meta.json last."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from common.datadir import ARRAY_NAMES, META_NAME, load_meta
from common.locks import try_lock
from common.outputs import new_folders
from common.pdd import DIFFICULTY_JSON, DIFFICULTY_NPY

log = logging.getLogger("preprocess")

DERIVED_FILES = ("difficulty.csv", DIFFICULTY_JSON, DIFFICULTY_NPY)  # later stages write them into the data dir


def check_out_path(out: Path, input_dir: Path) -> None:
    """Refuse an --out_dir that cannot be a folder (a file at or on its path) or that is, contains or lies inside
    --input_dir (links followed), before any work: writing there would replace or bury the raw data."""
    for folder in reversed(out.parents):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(
                f"--out_dir {out} cannot be created: {folder} is a file, not a folder; choose another --out_dir")
    if out.is_symlink() and not out.exists() or out.exists() and not out.is_dir():
        raise FileExistsError(f"--out_dir {out} is a file, which preprocess.py did not write and does not replace, "
                              "even with --overwrite; choose another --out_dir")
    out_real, input_real = out.resolve(), input_dir.resolve()
    relation = ("is" if out_real == input_real else "contains" if out_real in input_real.parents
                else "lies inside" if input_real in out_real.parents else None)
    if relation:
        raise ValueError(f"--out_dir {out} {relation} --input_dir {input_dir}; choose an --out_dir outside the "
                         "raw data")


def check_out_dir(out: Path, config_id: str, overwrite: bool) -> dict | None:
    """The meta.json of the dataset an earlier run wrote into --out_dir (None when it holds none); refuse another
    dataset (one of another config_id), other files or a file in its place unless --overwrite, which replaces only
    preprocess.py's own files."""
    if not (out.exists() or out.is_symlink()):
        return None
    previous = None
    with contextlib.suppress(ValueError):  # meta.json that is not JSON: not ours to read
        previous = load_meta(out) if (out / META_NAME).is_file() else None
    if previous is not None and "config_id" in previous:
        if previous["config_id"] == config_id:
            log.info("%s holds this same dataset; rebuilding its arrays and meta.json (its other files are kept)", out)
        elif not overwrite:
            raise FileExistsError(
                f"--out_dir {out} already holds a different dataset (made by: {previous.get('command')}); pass "
                "--overwrite to replace its arrays and meta.json (other files in it are kept), or choose another "
                "--out_dir")
        else:
            log.info("%s holds another dataset: replacing its arrays and meta.json, keeping its other files", out)
        return previous
    if not any(out.iterdir()):
        return None
    if not overwrite:
        raise FileExistsError(
            f"--out_dir {out} holds other files and no meta.json of preprocess.py; pass --overwrite to write the "
            "dataset beside them (they are kept), or choose another --out_dir")
    log.warning("%s holds other files and no meta.json of preprocess.py: writing the X_/y_ arrays and meta.json "
                "beside them, leaving the rest alone", out)
    return None


@contextlib.contextmanager
def out_dir_locked(out_dir: Path) -> Iterator[None]:
    """Hold out_dir's lock (common/locks.py) while the run lives, so two runs never write one out dir at once; a failed
    run leaves no folder it made for it (new_folders)."""
    with new_folders(out_dir.parent):
        lock = try_lock(out_dir)
        if lock is None:
            raise BlockingIOError(f"another preprocess.py is writing {out_dir}; wait for it to end")
        try:
            yield
        finally:
            lock.release()


def move_aside_stale(out_dir: Path, old_fingerprint: str) -> None:
    """Move the files later stages made from the dataset out_dir held before into out_dir/stale-<its fingerprint>/."""
    found = [name for name in DERIVED_FILES if (out_dir / name).exists()]
    if not found:
        return
    aside, n = out_dir / f"stale-{old_fingerprint[:12]}", 1
    while aside.exists():
        n += 1
        aside = out_dir / f"stale-{old_fingerprint[:12]}-{n}"
    aside.mkdir()
    for name in found:
        os.replace(out_dir / name, aside / name)
    log.warning("%s now holds another dataset: moved %s into %s (they were made from the data it held before)",
                out_dir, ", ".join(found), aside)


def commit(stage: Path, out_dir: Path, previous: dict | None, fingerprint: str) -> None:
    """Put the finished arrays and meta.json of stage in out_dir, replacing only the files of those names; meta.json
    goes out first and comes in last, so a run killed in between leaves no folder that loads as a data dir."""
    if not out_dir.is_dir():
        os.replace(stage, out_dir)
        return
    (out_dir / META_NAME).unlink(missing_ok=True)
    old_fingerprint = ((previous or {}).get("fingerprint") or {}).get("dataset")
    if old_fingerprint and old_fingerprint != fingerprint:
        move_aside_stale(out_dir, old_fingerprint)
    for name in (*ARRAY_NAMES, META_NAME):
        os.replace(stage / name, out_dir / name)
    stage.rmdir()
