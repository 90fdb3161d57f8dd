"""Read and write a "data dir": X_/y_ train/val/test .npy arrays plus meta.json (see PIPELINE.md)."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

import numpy as np

DEFAULT_DATA_DIR = Path("results/baseline")   # preprocess.py writes it, every later stage reads it
DEFAULT_PDD_DIR = Path("results/pdd")
SPLITS = ("train", "val", "test")
META_NAME = "meta.json"
ARRAY_NAMES = tuple(f"{kind}_{split}.npy" for split in SPLITS for kind in ("X", "y"))


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


def load_split(data_dir: str | Path, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return (X, y) of one split; X memory-mapped read-only by default so large data stays on disk."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    x_path, y_path = data_dir / f"X_{split}.npy", data_dir / f"y_{split}.npy"
    for path in (x_path, y_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; re-run preprocess.py for {data_dir}")
    X, y = (load_npy(x_path, "r" if mmap else None), load_npy(y_path))
    if len(X) != len(y):
        raise ValueError(f"{x_path} has {len(X)} rows but {y_path} has {len(y)}; re-run preprocess.py")
    return X, y


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


def fingerprint_arrays(data_dir: str | Path) -> dict[str, str]:
    """Per-file SHA-256 of the six arrays plus one 'dataset' digest over all of them."""
    data_dir = Path(data_dir)
    prints = {name: file_sha256(data_dir / name) for name in ARRAY_NAMES}
    combined = hashlib.sha256("".join(prints[name] for name in ARRAY_NAMES).encode()).hexdigest()
    return {**prints, "dataset": combined}


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside path and rename it over path on success, so readers never see half a file.
    The temporary file's name carries this process's id; those that killed writers left are removed first."""
    path = Path(path)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    """True while a process with this id exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
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


def _remove_stale_staging(out_dir: Path) -> None:
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
def staged_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of out_dir; on success it replaces out_dir, on error it is removed.

    An interrupted or failed run therefore leaves the previous out_dir untouched, and what a killed
    run left behind is cleared by the next one (see _remove_stale_staging).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out_dir)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-{os.getpid()}-"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        _remove(old)
