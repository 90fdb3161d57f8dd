"""Shared fixtures. The real PTB-XL sample lives in ../shared beside the project; tiny_* fixtures write
tiny synthetic data dirs in the docs/PIPELINE.md layout, fast to train on."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from common.datadir import fingerprint_arrays, write_json_atomic

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl-sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real PTB-XL excerpt; when it is missing the test fails on CI (CI is set) and skips elsewhere."""
    if not (SAMPLE / "ptbxl_database.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"PTB-XL sample not found at {SAMPLE}")
        pytest.skip(f"PTB-XL sample not found at {SAMPLE}")
    return SAMPLE


TINY_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def tiny_write_data_dir(path: Path, multilabel: bool = True, n_classes: int = 3,
                        sizes: tuple[int, int, int] = (96, 48, 48), fs: int = 50, length: int = 200,
                        seed: int = 0, inf_in_train: bool = False) -> Path:
    """An easily separable data dir: class k adds a (2 + 3k) Hz sine to every lead over noise and an offset.

    Multi-label targets are independent coin flips per class (float32 multi-hot); single-label ones one class
    index per record (int64). inf_in_train puts +Inf into the first train record, after normalisation stats.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    classes = [f"C{k}" for k in range(n_classes)]
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes):
        if multilabel:
            y = (rng.random((n, n_classes)) < 0.4).astype(np.float32)
            present = y
        else:
            y = rng.integers(0, n_classes, n).astype(np.int64)
            present = np.eye(n_classes, dtype=np.float32)[y]
        phase = rng.uniform(0, 2 * np.pi, (n, n_classes, 1))
        waves = np.sin(2 * np.pi * (2 + 3 * np.arange(n_classes))[None, :, None] * t + phase)
        signal = np.einsum("nk,nkt->nt", present, waves)[:, None, :]
        X = (0.3 * signal + 0.1 * rng.standard_normal((n, len(TINY_LEADS), length)) + 0.05).astype(np.float32)
        arrays[split] = (X, y)
    train_X = arrays["train"][0]
    mean, std = train_X.mean(axis=(0, 2)), train_X.std(axis=(0, 2))
    if inf_in_train:
        train_X[0] = np.inf
    path.mkdir(parents=True, exist_ok=True)
    for split, (X, y) in arrays.items():
        np.save(path / f"X_{split}.npy", X)
        np.save(path / f"y_{split}.npy", y)
    meta = {
        "classes": classes, "task": "tiny", "multilabel": multilabel, "fs": fs, "length": length,
        "leads": TINY_LEADS,
        "normalisation": {"method": "per_lead_zscore", "mean": mean.tolist(), "std": std.tolist()},
        "fingerprint": fingerprint_arrays(path),
    }
    write_json_atomic(path / "meta.json", meta)
    return path


@pytest.fixture
def tiny_make_data_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: tiny_make_data_dir("name", multilabel=..., n_classes=..., sizes=..., fs=..., length=...,
    seed=..., inf_in_train=...) writes a tiny data dir under tmp_path and returns its path."""
    return lambda name, **kwargs: tiny_write_data_dir(tmp_path / name, **kwargs)


@pytest.fixture
def tiny_data_dir(tiny_make_data_dir: Callable[..., Path]) -> Path:
    """A tiny multi-label data dir: 3 classes, 12 leads, 50 Hz, 200 samples, 96/48/48 records."""
    return tiny_make_data_dir("tiny_data")


# Helpers shared by the PDD, difficulty and experiment tests: import them with `from conftest import ...`.
import csv  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from common.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = dict(batch_size=16, lr=1e-2, window_seconds=2.0, width=8, stages=2, blocks=1, kernel_size=5, threads=1)


def tiny_train_config(data_dir: Path, ckpt_dir: Path, **overrides: object) -> TrainConfig:
    """A TrainConfig for a tiny model (TINY_TRAIN), 4 epochs unless overridden."""
    from common.config import TrainConfig

    return TrainConfig(**{"data_dir": str(data_dir), "ckpt_dir": str(ckpt_dir), "epochs": 4, **TINY_TRAIN,
                          **overrides})


def train_exit_code(cfg: TrainConfig) -> int:
    """The exit code train_1d_baseline.py ends with for cfg (common.cli.run_cli around train); its line on stderr."""
    from common.cli import run_cli
    from common.train import train

    return run_cli(lambda: train(cfg))


def run_repo_script(script: str, *args: object, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a script of the repository (path relative to its root) as a user would; output captured as text."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def patched_script(script: Path, args: list[str], patch: str) -> list[str]:
    """The command that runs a script of the repository as a user would, after `patch` (Python run first in the
    same process: it replaces what the test needs changed, e.g. slows a step down or breaks it)."""
    argv = [str(script), *map(str, args)]
    code = (f"import runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n{patch}\nsys.argv = {argv!r}\n"
            f"runpy.run_path({str(script)!r}, run_name='__main__')")
    return [sys.executable, "-c", code]


def history_rows(run_dir: Path) -> list[dict]:
    """history.csv of a run dir as dicts of strings."""
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def with_preprocess_meta(data_dir: Path) -> Path:
    """Add to a tiny data dir the meta.json entries preprocess.py writes and later stages read: counts, class
    counts, record and patient ids per split (two records per patient)."""
    meta = json.loads((data_dir / "meta.json").read_text())
    counts = {split: len(np.load(data_dir / f"y_{split}.npy")) for split in ("train", "val", "test")}
    meta.update(counts=counts, class_counts={split: {} for split in counts},
                splits={split: {"record_ids": [f"{split}{i}" for i in range(n)],
                                "patient_ids": [f"p{split}{i // 2}" for i in range(n)]} for split, n in counts.items()})
    write_json_atomic(data_dir / "meta.json", meta)
    return data_dir


TINY_TRAIN_FLAGS = [f"--{key}={value}" for key, value in TINY_TRAIN.items()]


def interrupt_at_start_up(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Start a script, wait until its quiet Ctrl-C handler is installed (SIGTERM caught: common/cli.py), which it
    does before importing torch, then send SIGINT; returns the finished process with its output."""
    import signal
    import time

    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status, deadline = Path(f"/proc/{proc.pid}/status"), time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        caught = next(int(line.split()[1], 16) for line in status.read_text().splitlines() if line.startswith("SigCgt"))
        if caught >> (signal.SIGTERM - 1) & 1:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def kill_when(proc: subprocess.Popen, reached: Callable[[], bool], point: str, timeout: float = 120) -> None:
    """kill -9 proc once reached() holds; fail the test when proc ends or the timeout passes first (showing proc's
    stderr when it was started with stderr=PIPE), so a kill test never passes without its kill."""
    deadline = time.time() + timeout
    while not reached():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            stderr = proc.communicate()[1]
            pytest.fail(f"never reached {point}, to be killed there (exit {proc.returncode})"
                        + (f": {stderr.decode()}" if stderr else ""))
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked linux_only in the portable test mode (tests/portable/sitecustomize.py sets
    ECG_PORTABLE_TEST) and off Linux, and those marked posix_signals on Windows: what they test does not exist
    there, so nothing can pass them."""
    skips = {}
    if os.environ.get("ECG_PORTABLE_TEST") == "1" or not sys.platform.startswith("linux"):
        skips["linux_only"] = "linux_only: a Linux-only facility, absent here (portable test mode or not Linux)"
    if sys.platform == "win32":
        skips["posix_signals"] = "posix_signals: Windows cannot send a process SIGINT, SIGTERM or SIGKILL to handle"
    for item in items:
        for marker, reason in skips.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))
