"""Read and write a "data dir": X_/y_ train/val/test .npy arrays plus meta.json (see docs/PIPELINE.md)."""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import psutil

from common.cli import removed_on_forced_exit
from common.files import stored_path

DEFAULT_DATA_DIR = Path("results/baseline")   # preprocess.py writes it, every later stage reads it
DEFAULT_PDD_DIR = Path("results/pdd")
SPLITS = ("train", "val", "test")
META_NAME = "meta.json"
ARRAY_NAMES = tuple(f"{kind}_{split}.npy" for split in SPLITS for kind in ("X", "y"))
QUICK_BLOCKS, QUICK_BLOCK_BYTES = 64, 1 << 16  # a quick print reads at most 4 MiB of an array


def load_meta(data_dir: str | Path) -> dict:
    """Load meta.json of a data dir, with a message naming the fix when it is absent."""
    path = Path(data_dir) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {data_dir} is not a data dir; create one with preprocess.py"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-run preprocess.py for {data_dir}") from None


def load_split(data_dir: str | Path, split: str, mmap: bool = True,
               meta: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (X, y) of one split, checked against meta.json (check_split_files; read unless given); X memory-mapped
    read-only by default so large data stays on disk."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    meta = load_meta(data_dir) if meta is None else meta
    x_path, y_path = data_dir / f"X_{split}.npy", data_dir / f"y_{split}.npy"
    for path in (x_path, y_path):
        if path.is_symlink() and not path.exists():
            raise FileNotFoundError(f"{path} links to {os.readlink(path)}, which is gone; {rebuild_fix(meta)}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; re-run preprocess.py for {data_dir}")
    check_stage_source(data_dir, meta, (x_path, y_path))
    X, y = (load_npy(x_path, "r" if mmap else None), load_npy(y_path))
    if len(X) != len(y):
        raise ValueError(f"{x_path} has {len(X)} rows but {y_path} has {len(y)}; re-run preprocess.py")
    check_split_files(data_dir, meta, split, len(X))
    return X, y


@dataclass(frozen=True)
class DataDir:
    """A data dir read at most once on a command's way through it: meta.json and each split are loaded and checked
    (load_meta, load_split) when first used, then kept, so a command passes this down instead of the path."""

    path: Path
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def meta(self) -> dict:
        """meta.json, loaded on first use."""
        return load_meta(self.path)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) of one split, X memory-mapped read-only; loaded and checked on first use."""
        if name not in self.arrays:
            self.arrays[name] = load_split(self.path, name, meta=self.meta)
        return self.arrays[name]


def rebuild_fix(meta: dict) -> str:
    """The command that rebuilds a data dir: pdd_folder_generator.py for a PDD stage, else preprocess.py."""
    return "re-run pdd_folder_generator.py" if "pdd" in meta else "re-run preprocess.py"


def check_split_files(data_dir: Path, meta: dict, split: str, rows: int) -> None:
    """Refuse a split whose arrays are not those meta.json describes: rows against its counts, and content against
    its quick prints (data dirs written before those existed are checked on rows only)."""
    counted = meta.get("counts", {}).get(split)
    quick = meta.get("fingerprint", {}).get("quick", {})
    for name in (f"X_{split}.npy", f"y_{split}.npy"):
        if counted is not None and rows != counted:
            problem = f"{rows} rows, meta.json counts {counted}"
        elif name in quick and quick_print(data_dir / name) != quick[name]:
            problem = "its content differs from the fingerprint meta.json records"
        else:
            continue
        raise ValueError(f"{name} in {data_dir} is not the array its meta.json describes ({problem}); "
                         f"{rebuild_fix(meta)}")


def check_stage_source(data_dir: Path, meta: dict, paths: tuple[Path, ...]) -> None:
    """Refuse a PDD stage whose symlinked arrays lead into a source data dir rebuilt since the stage was made: the
    links now name other records. Hard links keep the old bytes, so only symlinks are checked."""
    stage = meta.get("pdd", {})
    source = stored_path(stage.get("source_data_dir", ""), data_dir)
    if not stage.get("source_fingerprint") or not any(path.is_symlink() for path in paths) \
            or not (source / META_NAME).is_file():
        return
    if load_meta(source).get("fingerprint", {}).get("dataset") != stage["source_fingerprint"]:
        raise ValueError(f"{data_dir} links its arrays to {source}, which was rebuilt since the stage was made, so "
                         f"they hold other records than its meta.json lists; re-run pdd_folder_generator.py to "
                         f"rebuild the stages from {source}")


def load_npy(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """np.load with a message naming the file when it is truncated or not an .npy array."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy array (truncated or corrupt: {e}); "
                         f"re-run the step that wrote it") from None


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """SHA-256 of a file's bytes, read in chunks so large arrays never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def quick_print(path: str | Path) -> str:
    """SHA-256 of a file's size and of QUICK_BLOCKS evenly spaced blocks, the first holding the .npy header (the whole
    file when it is smaller): cheap enough to check a multi-GB array each time it is loaded."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= QUICK_BLOCKS * QUICK_BLOCK_BYTES:
            digest.update(f.read())
        else:
            for k in range(QUICK_BLOCKS):
                f.seek(k * (size - QUICK_BLOCK_BYTES) // (QUICK_BLOCKS - 1))
                digest.update(f.read(QUICK_BLOCK_BYTES))
    return digest.hexdigest()


def fingerprint_arrays(data_dir: str | Path) -> dict:
    """Per-file SHA-256 of the six arrays, one 'dataset' digest over all of them, and their quick prints under 'quick'
    (what load_split checks)."""
    data_dir = Path(data_dir)
    prints = {name: file_sha256(data_dir / name) for name in ARRAY_NAMES}
    combined = hashlib.sha256("".join(prints[name] for name in ARRAY_NAMES).encode()).hexdigest()
    return {**prints, "dataset": combined, "quick": {name: quick_print(data_dir / name) for name in ARRAY_NAMES}}


def cannot_write(path: Path, error: OSError) -> OSError:
    """An OSError naming the output path and, in words, why it cannot be written, instead of `error`, which names a
    temporary file and gives only the system's words."""
    candidates = (path, *path.parents) if error.errno == errno.EEXIST else path.parents  # EEXIST: mkdir met a file
    blocker = next((p for p in candidates if os.path.lexists(p)), None)
    if blocker is not None and not blocker.is_dir():
        reason = f"{blocker} is a file"
    elif error.errno == errno.EISDIR:
        reason = "it is a folder"
    elif error.errno == errno.EROFS:
        reason = f"{path.parent} is read-only (a read-only file system)"
    elif error.errno in (errno.EACCES, errno.EPERM):
        reason = f"no permission to write in {path.parent}"
    elif error.errno == errno.ENOENT:
        reason = f"folder {path.parent} does not exist"
    else:
        reason = error.strerror or str(error)
    named = OSError(f"cannot write {path}: {reason}")
    named.errno = error.errno
    return named


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside path and rename it over path on success, so readers never see half a file.
    The temporary file's name carries this process's id; those that killed writers left are removed first.
    A path that cannot be written fails naming it and why (cannot_write), leaving no temporary file."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise cannot_write(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    remove_stale_temp_files(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename == tmp:  # our own chmod or rename failed, not the caller's writing
            raise cannot_write(path, e) from None
        raise


def write_json_atomic(path: str | Path, obj: object) -> None:
    """Write JSON atomically (see atomic_file)."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save atomically (see atomic_file)."""
    with atomic_file(path, "wb") as f:
        np.save(f, array)


def _pid_running(pid: int) -> bool:
    """True while a process with this id exists and is not a zombie (psutil: the same answer on every platform)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _remove(path: Path) -> None:
    """Delete a folder tree, or a file or link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def remove_stale_temp_files(path: Path) -> None:
    """Remove the temporary files atomic_file left beside path in processes that are gone (killed while
    writing); a live writer's are left alone."""
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-\w+\.tmp")
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = own.fullmatch(temp.name)
        if match and not _pid_running(int(match.group(1))):
            temp.unlink(missing_ok=True)


def remove_stale_staging(out_dir: Path) -> None:
    """Clear what staged_output_dir runs killed before their clean-up left beside out_dir.

    Only its own names are touched, and only when the process named in them is gone:
    `.NAME.tmp-PID-*` (a half-built output) is removed; `.NAME.old-PID` (the previous output, moved
    aside just before the new one was moved in) is put back when out_dir is missing, else removed.
    """
    own = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:tmp-(\d+)-\w+|old-(\d+))")
    for path in sorted(out_dir.parent.iterdir()):
        match = own.fullmatch(path.name)
        if match is None or _pid_running(int(match.group(1) or match.group(2))):
            continue
        if match.group(2) and not (out_dir.exists() or out_dir.is_symlink()):
            os.replace(path, out_dir)
        else:
            _remove(path)


@contextlib.contextmanager
def staging_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a new temporary sibling of out_dir (`.NAME.tmp-PID-*`), removed when the block fails; what killed runs
    left beside out_dir is cleared first (see remove_stale_staging). A folder that cannot be written fails naming
    out_dir and why (cannot_write). The caller moves what it wants out of it on success."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out_dir)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-{os.getpid()}-"))
    except OSError as e:
        raise cannot_write(out_dir, e) from None
    try:
        os.chmod(tmp, 0o755)
        with removed_on_forced_exit(tmp):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of out_dir; on success it replaces out_dir, on error it is removed.

    An interrupted or failed run therefore leaves the previous out_dir untouched, and what a killed
    run left behind is cleared by the next one (see remove_stale_staging).
    """
    with staging_dir(out_dir) as tmp:
        yield tmp
        _swap_in(tmp, Path(out_dir))


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Rename tmp over out_dir, the previous out_dir moved aside first and removed last; a failed rename puts it back
    and fails naming out_dir."""
    old = None
    try:
        if out_dir.exists() or out_dir.is_symlink():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except OSError as e:
        if old is not None and old.exists() and not out_dir.exists():
            os.replace(old, out_dir)
        raise cannot_write(out_dir, e) from None
    if old is not None:
        _remove(old)
