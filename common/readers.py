"""preprocess.py's reader processes: each reads a block of records straight into its rows of an .npy file and sums
them per lead for the normalisation statistics, so no array is ever held whole in memory."""
from __future__ import annotations

import contextlib
import ctypes
import io
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
from collections.abc import Iterator
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common import signals

CHUNK_BYTES = 16 << 20  # a worker's block of rows; drop_rows moves rows this many bytes at a time
PR_SET_PDEATHSIG = 1  # linux/prctl.h
START_SECONDS = 120.0  # for the first reader worker to answer; one that cannot start is replaced forever, never failed


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
    """What a worker reports for its block: skipped (row, reason) pairs, per-lead [sum, sum of squares], and how many
    headers were read with each fix (common.signals)."""

    failed: list[tuple[int, str]]
    sums: np.ndarray
    fixes: Counter


def prepare_signal(path: Path, fs: float, length: int, band: tuple[float, float] | None,
                   fixes: Counter | None = None) -> np.ndarray:
    """Read a record (in mV) and apply the documented transforms: resample, band-pass, centre-crop or pad."""
    x, native_fs = signals.read_record(path, fixes=fixes)
    return signals.fit_length(signals.resample_and_filter(x, native_fs, fs, band), length).astype(np.float32)


def read_chunk(task: ReadTask) -> ReadResult:
    """Worker: read the task's records, sum them per lead, and write their rows into the .npy in one positioned write.

    One positioned write of the whole block avoids the page faults of filling a memory map row by row.
    A skipped record's row is left as zeros, so it adds nothing to the sums.
    """
    block = np.zeros((len(task.records), 12, task.length), dtype=np.float32)
    sums = np.zeros((2, 12))
    failed, fixes = [], Counter()
    for i, rec in enumerate(task.records):
        try:
            block[i] = prepare_signal(task.input_dir / rec, task.fs, task.length, task.bandpass, fixes)
        except signals.RecordError as exc:
            failed.append((task.first_row + i, str(exc)))
            continue
        row = block[i].astype(np.float64)
        sums += [row.sum(axis=1), np.einsum("ij,ij->i", row, row)]
    with open(task.x_path, "r+b") as f:
        f.seek(task.data_offset + task.first_row * block[0].nbytes)
        f.write(block.data)
    return ReadResult(failed, sums, fixes)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the body runs (the main thread's handlers record them), then deliver them:
    one handled half-way through starting the pool left it unable to stop, or a worker waiting for its start-up data
    (spawn) that never came."""
    caught = []
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in caught:
            signal.raise_signal(signum)


def exit_with_parent() -> None:
    """End this worker the moment its parent process ends, however it ends (kill -9 included): on Linux the kernel's
    parent-death signal, everywhere a thread waiting on the parent's sentinel (the pipe or process handle that
    multiprocessing gives every child, ready once the parent is gone)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (wait([parent.sentinel]), os._exit(1)), daemon=True).start()


def start_worker() -> None:
    """Reader process set-up, under fork or spawn alike: die with the parent, and leave Ctrl-C to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    exit_with_parent()


def wait_for_a_worker(pool: multiprocessing.pool.Pool) -> None:
    """Return once a reader worker has answered; fail naming the fix when none does within START_SECONDS. Under
    spawn a worker first imports the main script again, and one that fails there dies and is replaced, forever:
    without this check preprocess.py would hang instead of failing."""
    try:
        pool.apply_async(int).get(timeout=START_SECONDS)
    except multiprocessing.TimeoutError:
        raise RuntimeError(f"no reader worker started within {START_SECONDS:g} s (their errors are printed above); "
                           "pass --workers 1 to read in this process") from None


def read_all(tasks: list[ReadTask], workers: int,
             total: int) -> tuple[list[tuple[Path, int, str]], dict[Path, np.ndarray], Counter]:
    """Run the read tasks on worker processes (the platform's start method: fork on Linux, spawn on macOS and
    Windows) with a progress bar; return every skipped (array, row, reason), the per-lead [sum, sum of squares] of
    each array, and the count of headers read with each fix.

    Leaving early (an error, Ctrl-C, SIGTERM) terminates the workers; a killed parent takes them along.
    """
    failures, sums, fixes = [], {}, Counter()
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=total, desc="reading records", unit="rec"))
        if workers > 1 and len(tasks) > 1:
            with stop_signals_deferred():  # the pool is in the stack once they land, so that leaving stops it
                pool = stack.enter_context(multiprocessing.get_context().Pool(min(workers, len(tasks)),
                                                                              start_worker))
            wait_for_a_worker(pool)
            results = pool.imap(read_chunk, tasks)
        else:
            results = map(read_chunk, tasks)
        for task, result in zip(tasks, results):
            failures += [(task.x_path, row, why) for row, why in result.failed]
            sums[task.x_path] = sums.get(task.x_path, 0) + result.sums
            fixes += result.fixes
            bar.update(len(task.records))
    return failures, sums, fixes


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
