"""Read and write a "data dir": X_/y_ train/val/test .npy arrays plus meta.json (see PIPELINE.md)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
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
    """Open a temporary file beside path and rename it over path on success, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


@contextlib.contextmanager
def staged_output_dir(out_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of out_dir; on success it replaces out_dir, on error it is removed.

    An interrupted or failed run therefore leaves the previous out_dir untouched.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
