"""Read one WFDB record as a (12, length) float32 array in the standard lead order, and transform it.

Reading parses the header and, for the common single-file format 16 (all of PTB-XL), reads the
.dat file with numpy directly: the same physical values as `wfdb.rdsamp`, without its per-record
overhead. Any other layout falls back to `wfdb.rdrecord`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy import signal as sps

STANDARD_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
WFDB_INVALID_16 = -32768


class RecordError(ValueError):
    """A record that cannot be used; the message says why and ends up in meta.json."""


@dataclass(frozen=True)
class Header:
    """The parts of a WFDB header that reading needs."""

    fs: float
    n_samples: int
    names: tuple[str, ...]
    files: tuple[str, ...]
    formats: tuple[str, ...]
    gains: tuple[float, ...]
    baselines: tuple[int, ...]


def parse_header(hea_path: Path) -> Header:
    """Parse a single-segment WFDB header; raise RecordError for what it cannot read."""
    try:
        lines = [ln for ln in hea_path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError as exc:
        raise RecordError(f"header unreadable: {exc}") from exc
    if not lines:
        raise RecordError("header is empty")
    first = lines[0].split()
    if len(first) < 4 or "/" in first[1]:
        raise RecordError("header has no sample count or is a multi-segment record")
    n_sig = int(first[1])
    fs = float(first[2].split("/")[0].split("(")[0])
    names, files, formats, gains, baselines = [], [], [], [], []
    for line in lines[1 : 1 + n_sig]:
        fields = line.split()
        if len(fields) < 3:
            raise RecordError(f"malformed signal line {line!r}")
        gain_text = fields[2].split("/")[0]
        gain = float(gain_text.split("(")[0]) or 200.0
        adc_zero = int(fields[4]) if len(fields) > 4 else 0
        baseline = int(gain_text.split("(")[1].rstrip(")")) if "(" in gain_text else adc_zero
        files.append(fields[0])
        formats.append(fields[1])
        gains.append(gain)
        baselines.append(baseline)
        names.append(fields[8] if len(fields) > 8 else f"ch{len(names)}")
    if len(names) != n_sig:
        raise RecordError(f"header announces {n_sig} signals but describes {len(names)}")
    return Header(fs, int(first[3]), tuple(names), tuple(files), tuple(formats), tuple(gains), tuple(baselines))


def read_physical(record_path: Path, header: Header) -> np.ndarray:
    """Physical signal (samples, channels) in float64, exactly as wfdb.rdsamp returns it."""
    single_format16 = set(header.formats) == {"16"} and len(set(header.files)) == 1
    if not single_format16:
        return wfdb.rdrecord(str(record_path)).p_signal
    dat = record_path.parent / header.files[0]
    n_channels = len(header.names)
    digital = np.fromfile(dat, dtype="<i2")
    if digital.size != header.n_samples * n_channels:
        raise RecordError(f"{dat.name} holds {digital.size} values, header expects {header.n_samples * n_channels}")
    digital = digital.reshape(header.n_samples, n_channels)
    physical = (digital - np.asarray(header.baselines, dtype=np.float64)) / np.asarray(header.gains)
    physical[digital == WFDB_INVALID_16] = np.nan
    return physical


def standard_lead_order(names: tuple[str, ...]) -> list[int]:
    """Column indices that put a record's leads in the standard 12-lead order (names matched case-insensitively)."""
    upper = [n.upper() for n in names]
    missing = [lead for lead in STANDARD_LEADS if lead not in upper]
    if missing:
        raise RecordError(f"has {len(names)} leads {list(names)}; missing {missing} of the standard 12")
    return [upper.index(lead) for lead in STANDARD_LEADS]


def read_record(record_path: Path) -> tuple[np.ndarray, float]:
    """Read a record as (12, samples) float64 in standard lead order, plus its sampling rate."""
    hea = record_path.with_name(record_path.name + ".hea")
    if not hea.is_file():
        raise RecordError(f"{hea} not found")
    header = parse_header(hea)
    order = standard_lead_order(header.names)
    try:
        physical = read_physical(record_path, header)
    except (OSError, ValueError) as exc:
        raise RecordError(f"signal unreadable: {exc}") from exc
    if not np.isfinite(physical).all():
        raise RecordError("has NaN or Inf samples")
    return physical[:, order].T, header.fs


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased), from fs_in to fs_out."""
    if fs_in == fs_out:
        return x
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


def bandpass(x: np.ndarray, fs: float, low: float, high: float) -> np.ndarray:
    """Zero-phase 3rd-order Butterworth band-pass along the last axis."""
    if not 0 < low < high < fs / 2:
        raise ValueError(f"band-pass {low}-{high} Hz must satisfy 0 < low < high < fs/2 = {fs / 2}")
    sos = sps.butter(3, [low, high], btype="band", fs=fs, output="sos")
    return sps.sosfiltfilt(sos, x, axis=-1)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop a longer signal, or zero-pad a shorter one at the end, to `length` samples."""
    n = x.shape[-1]
    if n >= length:
        start = (n - length) // 2
        return x[..., start : start + length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - n)])
