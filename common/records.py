"""Find the recordings predict.py is pointed at: one WFDB record, a folder of them, a PhysioNet PTB-XL folder, or
an .npy array; each found record reads itself as (leads, samples) in the order a model asks for, with its rate."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import signals
from common.datadir import load_npy
from common.ptbxl import read_database

log = logging.getLogger("predict")

PTBXL_COLUMNS = {100: "filename_lr", 500: "filename_hr"}


@dataclass(frozen=True)
class WfdbRecord:
    """A WFDB record on disk (path without extension); `name` is what the output lists."""

    name: str
    path: Path

    def read(self, leads: tuple[str, ...], fixes: Counter | None = None) -> tuple[np.ndarray, float]:
        """Signal (len(leads), samples) float64 mV in the order of `leads`, and its sampling rate; RecordError if
        unusable. Fixes its header needed are counted in `fixes`."""
        return signals.read_record(self.path, leads, fixes)


@dataclass(frozen=True)
class ArrayRecord:
    """Row `row` of an (N, leads, T) array whose channels are `names`, sampled at `fs`, in mV once multiplied by
    `to_mv` (1 for a float array in mV, 1 / --adc_gain for raw ADC counts)."""

    name: str
    array: np.ndarray
    row: int
    fs: float
    names: tuple[str, ...]
    to_mv: float = 1.0

    def read(self, leads: tuple[str, ...], fixes: Counter | None = None) -> tuple[np.ndarray, float]:
        """Signal (len(leads), samples) float64 mV in the order of `leads`, and `fs`; RecordError if unusable (an
        array needs no fixes)."""
        x = self.to_mv * np.asarray(self.array[self.row], dtype=np.float64)[signals.lead_order(self.names, leads)]
        signals.require_finite(x)
        return x, self.fs


Record = WfdbRecord | ArrayRecord


def find_records(path: Path, model_fs: float, fs: float | None = None, leads: list[str] | None = None,
                 adc_gain: float | None = None) -> list[Record]:
    """The records at `path` (see the module docstring); `fs`, `leads` and `adc_gain` describe an .npy array and
    only it.

    A PTB-XL folder gives each ecg_id once: from filename_lr for models of at most 100 Hz, else filename_hr,
    falling back to the other file (resampled later) where the preferred one is absent. ValueError for bad usage.
    """
    if not (path.exists() or path.with_name(path.name + ".hea").is_file()):
        raise ValueError(f"--input {path} not found")
    if path.suffix == ".npy":
        return array_records(path, fs, leads, adc_gain)
    if (fs, leads, adc_gain) != (None, None, None):
        raise ValueError("--fs, --leads and --adc_gain describe an .npy --input only; WFDB headers carry their own")
    if path.suffix == ".hea" and path.is_file():
        return [WfdbRecord(str(path.with_suffix("")), path.with_suffix(""))]
    if path.with_name(path.name + ".hea").is_file():
        return [WfdbRecord(str(path), path)]
    if not path.is_dir():
        raise ValueError(f"--input {path} is not a WFDB record (.hea), a folder of records or an .npy array")
    if (path / "ptbxl_database.csv").is_file():
        return ptbxl_records(path, model_fs)
    headers = sorted(path.rglob("*.hea"))
    if not headers:
        raise ValueError(f"--input {path} holds no WFDB record (no .hea file in it or below it)")
    return [WfdbRecord(str(h.relative_to(path).with_suffix("")), h.with_suffix("")) for h in headers]


def ptbxl_records(folder: Path, model_fs: float) -> list[WfdbRecord]:
    """One record per ecg_id of a PhysioNet PTB-XL folder, at the model's rate where the files are there."""
    database = read_database(folder / "ptbxl_database.csv")
    preferred = PTBXL_COLUMNS[100] if model_fs <= 100 else PTBXL_COLUMNS[500]
    other = PTBXL_COLUMNS[500] if preferred == PTBXL_COLUMNS[100] else PTBXL_COLUMNS[100]
    records, fallbacks = [], 0
    for ecg_id, first, second in zip(database["ecg_id"], database[preferred].astype(str), database[other].astype(str)):
        chosen = first
        if not (folder / f"{first}.hea").is_file() and (folder / f"{second}.hea").is_file():
            chosen, fallbacks = second, fallbacks + 1
        records.append(WfdbRecord(str(ecg_id), folder / chosen))
    log.info("PTB-XL folder %s: %d records from %s (the model's %g Hz)%s", folder, len(records), preferred, model_fs,
             f"; {fallbacks} absent there are read from {other} and resampled" if fallbacks else "")
    return records


def array_records(path: Path, fs: float | None, leads: list[str] | None,
                  adc_gain: float | None = None) -> list[ArrayRecord]:
    """The rows of an (N, leads, T) .npy array, named `file.npy:row`: floats in mV, or integer ADC counts with
    --adc_gain (ADC units per mV); ValueError unless --fs, --leads and --adc_gain fit it."""
    if fs is None or not leads:
        raise ValueError(f"--input {path} is an array: pass its sampling rate --fs and its channels' --leads "
                         "(comma-separated names, e.g. I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6)")
    if not (np.isfinite(fs) and fs > 0):
        raise ValueError(f"--fs must be a positive rate in Hz, got {fs:g}")
    array = load_npy(path, mmap_mode="r")
    if array.ndim != 3 or array.shape[1] != len(leads):
        raise ValueError(f"--input {path} has shape {array.shape}; expected (records, {len(leads)} leads as "
                         f"--leads names them, samples)")
    integers = np.issubdtype(array.dtype, np.integer)
    if integers and adc_gain is None:
        raise ValueError(f"--input {path} holds {array.dtype} values, raw ADC counts rather than mV: pass --adc_gain "
                         "(ADC units per mV, e.g. 1000 for 1 uV steps), or save the signals as floats in mV")
    if adc_gain is not None and (not integers or not (np.isfinite(adc_gain) and adc_gain > 0)):
        raise ValueError(f"--adc_gain {adc_gain:g} is for an integer array, and above 0; {path} holds {array.dtype}"
                         + (" values already in mV: leave --adc_gain out" if not integers else ""))
    to_mv = 1.0 / adc_gain if adc_gain is not None else 1.0
    return [ArrayRecord(f"{path.name}:{row}", array, row, fs, tuple(leads), to_mv) for row in range(len(array))]
