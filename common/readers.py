"""preprocess.py's reader processes: each reads a block of records straight into its rows of an .npy file and sums
them per lead for the normalisation statistics, so no array is ever held whole in memory."""
from __future__ import annotations

import contextlib
import ctypes
import io
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import signals

CHUNK_BYTES = 16 << 20  # a worker's block of rows; drop_rows moves rows this many bytes at a time
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class ReadTask:
    """One block of records for a worker: which records, and where their consecutive rows start in which .npy."""

    input_dir: Path
    x_path: Path
    data_offset: int
    first_row: int
    records: list[str]
    fs: float
    length: int
    bandpass: tuple[float, float] | None


@dataclass
class ReadResult:
    """What a worker reports for its block: skipped (row, reason) pairs and per-lead [sum, sum of squares]."""

    failed: list[tuple[int, str]]
    sums: np.ndarray


def prepare_signal(path: Path, fs: float, length: int, band: tuple[float, float] | None) -> np.ndarray:
    """Read a record and apply the documented transforms: resample, band-pass, centre-crop or pad."""
    x, native_fs = signals.read_record(path)
    return signals.fit_length(signals.resample_and_filter(x, native_fs, fs, band), length).astype(np.float32)


def read_chunk(task: ReadTask) -> ReadResult:
    """Worker: read the task's records, sum them per lead, and write their rows into the .npy in one positioned write.

    A plain pwrite of the whole block avoids the page faults of filling a memory map row by row.
    A skipped record's row is left as zeros, so it adds nothing to the sums.
    """
    block = np.zeros((len(task.records), 12, task.length), dtype=np.float32)
    sums = np.zeros((2, 12))
    failed = []
    for i, rec in enumerate(task.records):
        try:
            block[i] = prepare_signal(task.input_dir / rec, task.fs, task.length, task.bandpass)
        except signals.RecordError as exc:
            failed.append((task.first_row + i, str(exc)))
            continue
        row = block[i].astype(np.float64)
        sums += [row.sum(axis=1), np.einsum("ij,ij->i", row, row)]
    fd = os.open(task.x_path, os.O_WRONLY)
    try:
        os.pwrite(fd, block, task.data_offset + task.first_row * block[0].nbytes)
    finally:
        os.close(fd)
    return ReadResult(failed, sums)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def start_worker(parent_pid: int) -> None:
    """Reader process set-up: die with the parent even when it is killed (Linux), and leave Ctrl-C to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the parent while it forked us
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def read_all(tasks: list[ReadTask], workers: int,
             total: int) -> tuple[list[tuple[Path, int, str]], dict[Path, np.ndarray]]:
    """Run the read tasks on worker processes with a progress bar; return every skipped (array, row, reason)
    and the per-lead [sum, sum of squares] of each array.

    Leaving early (an error, Ctrl-C, SIGTERM) terminates the workers; a killed parent takes them along.
    """
    failures, sums = [], {}
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, desc="reading records", unit="rec"))
        if workers > 1 and len(tasks) > 1:
            # a signal handled half-way through starting the pool left it unable to stop (a hang, or an ignored
            # exit): the pool starts with them blocked and is in the stack, so that leaving stops it, once they land
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                pool = stack.enter_context(get_context("fork").Pool(min(workers, len(tasks)), start_worker,
                                                                    (os.getpid(),)))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            results = pool.imap(read_chunk, tasks)
        else:
            results = map(read_chunk, tasks)
        for task, result in zip(tasks, results):
            failures += [(task.x_path, row, why) for row, why in result.failed]
            sums[task.x_path] = sums.get(task.x_path, 0) + result.sums
            bar.update(len(task.records))
    return failures, sums


def drop_rows(x_path: Path, drop: list[int]) -> None:
    """Remove rows from an .npy array in place: later rows move up, CHUNK_BYTES at a time, and the file is cut short."""
    X = np.load(x_path, mmap_mode="r+")
    keep = np.setdiff1d(np.arange(len(X)), drop)
    per_chunk = max(1, CHUNK_BYTES // X[0].nbytes)
    for start in range(min(drop), len(keep), per_chunk):
        stop = min(start + per_chunk, len(keep))
        X[start:stop] = X[keep[start:stop]]  # every source row lies at or after its target row
    X.flush()
    header = io.BytesIO()
    shape = (len(keep), *X.shape[1:])
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(X.dtype), "fortran_order": False, "shape": shape})
    if header.tell() != X.offset:
        raise RuntimeError(f"{x_path}: the .npy header of the shorter array does not fit in place")
    end = X.offset + len(keep) * X[0].nbytes
    del X
    with open(x_path, "r+b") as f:
        f.write(header.getvalue())
        f.truncate(end)
