"""Read one WFDB record as a (leads, length) array in millivolts, by default in the standard 12-lead order, and
transform it.

Reading parses the header and, for the common single-file format 16 (all of PTB-XL), reads the .dat file with numpy
directly: the same physical values as `wfdb.rdsamp`, without its per-record overhead; a MATLAB v4 `.mat` signal file
(as the PhysioNet/CinC Challenge ships records) is read the same way. Any other layout falls back to `wfdb.rdrecord`.
Every signal is converted from its header's units (µV, mV or V, any case) to mV. Headers as other tools write them
are read with a fix, which the caller may count (`fixes`): a record line naming the signal file (`E00001.mat`), a
signal line without a gain (WFDB's default, 200 ADC units per mV).

wfdb and scipy.signal are imported where they are used: a reader worker that spawn starts (macOS, Windows) imports
this module afresh, and for PTB-XL's own records at their own rate needs neither (they take about 2 s to import).
"""
from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

STANDARD_LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
WFDB_INVALID_16 = -32768
WFDB_DEFAULT_GAIN = 200.0  # ADC units per physical unit when a signal line gives none
TO_MV = {"uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "mv": 1.0, "v": 1e3}  # units, lower-cased; both micro signs
BYTES_PER_SAMPLE = {"8": 1, "16": 2, "61": 2, "80": 1, "160": 2, "212": 1.5, "310": 4 / 3, "311": 4 / 3, "24": 3,
                    "32": 4}
FIX_FILE_NAME = "record line names the signal file, not the record"
FIX_NO_GAIN = f"signal line without a gain: WFDB's default {WFDB_DEFAULT_GAIN:g} ADC units per mV assumed"


class RecordError(ValueError):
    """A record that cannot be used; the message says why and ends up in meta.json."""


@dataclass(frozen=True)
class Header:
    """The parts of a WFDB header that reading needs."""

    fs: float
    n_samples: int
    names: tuple[str, ...]
    files: tuple[str, ...]
    formats: tuple[str, ...]      # the format number alone ("16" of "16+24")
    offsets: tuple[int, ...]      # bytes before the first sample in the signal file ("+24" of "16+24")
    gains: tuple[float, ...]
    baselines: tuple[int, ...]
    to_mv: tuple[float, ...]      # factor from each signal's units to mV
    fixes: tuple[str, ...] = ()   # what was read with a fix (FIX_*)


def parse_header(hea_path: Path) -> Header:
    """Parse a single-segment WFDB header; raise RecordError, naming the file, for anything it cannot use."""
    try:
        text = hea_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"header {hea_path} unreadable: {exc}") from exc
    try:
        return _header_from_lines([ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")])
    except (ValueError, IndexError) as exc:
        raise RecordError(f"header {hea_path} malformed: {exc}") from exc


def _number(text: str, what: str, kind: type = float) -> float | int:
    """A header field as a number; ValueError naming the field otherwise."""
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not {'a whole number' if kind is int else 'a number'}") from None


def _header_from_lines(lines: list[str]) -> Header:
    """Header fields from a header's non-comment lines; ValueError says what is wrong."""
    if not lines:
        raise ValueError("it is empty")
    first = lines[0].split()
    if len(first) < 4 or "/" in first[1]:
        raise ValueError("no sample count, or a multi-segment record")
    n_sig = _number(first[1], "signal count", int)
    fs = _number(first[2].split("/")[0].split("(")[0], "sampling rate")
    n_samples = _number(first[3], "sample count", int)
    if not (np.isfinite(fs) and fs > 0) or n_sig < 1 or n_samples < 1:
        raise ValueError(f"record line {lines[0]!r} needs signals, samples and a sampling rate above 0")
    fixes = {FIX_FILE_NAME} if Path(first[0]).suffix.lower() in (".mat", ".dat") else set()
    names, files, formats, offsets, gains, baselines, to_mv = [], [], [], [], [], [], []
    for line in lines[1 : 1 + n_sig]:
        fields = line.split()
        if len(fields) < 2:
            raise ValueError(f"signal line {line!r} names no signal file and format")
        fmt = fields[1].split("+")
        offsets.append(_number(fmt[1], "byte offset", int) if len(fmt) > 1 else 0)
        if len(fields) < 3:
            fixes.add(FIX_NO_GAIN)
        gain_field = fields[2] if len(fields) > 2 else str(WFDB_DEFAULT_GAIN)
        gain_text, _, units = gain_field.partition("/")
        gain = _number(gain_text.split("(")[0], "gain")
        if not (np.isfinite(gain) and gain > 0):
            raise ValueError(f"signal line {line!r}: gain {gain_text!r} is not a calibration (ADC units per mV, "
                             "above 0)")
        adc_zero = _number(fields[4], "ADC zero", int) if len(fields) > 4 else 0
        baseline = _number(gain_text.split("(")[1].rstrip(")"), "baseline", int) if "(" in gain_text else adc_zero
        name = fields[8] if len(fields) > 8 else f"ch{len(names)}"
        factor = TO_MV.get((units or "mV").lower())
        if factor is None:
            raise ValueError(f"signal {name} is in units {units!r}, not µV, mV or V; convert the record to one of "
                             "those")
        files.append(fields[0])
        formats.append(fmt[0].split("x")[0].split(":")[0])
        gains.append(gain)
        baselines.append(baseline)
        to_mv.append(factor)
        names.append(name)
    if len(names) != n_sig:
        raise ValueError(f"it announces {n_sig} signals but describes {len(names)}")
    return Header(fs, n_samples, tuple(names), tuple(files), tuple(formats), tuple(offsets), tuple(gains),
                  tuple(baselines), tuple(to_mv), tuple(sorted(fixes)))


def read_physical(record_path: Path, header: Header) -> np.ndarray:
    """Physical signal (samples, channels) in float64 in the header's units, exactly as wfdb.rdsamp returns it."""
    single_format16 = set(header.formats) == {"16"} and len(set(header.files)) == 1
    if not single_format16:
        check_file_sizes(record_path.parent, header)
        import wfdb
        return wfdb.rdrecord(str(record_path)).p_signal
    signal_file = record_path.parent / header.files[0]
    n_channels = len(header.names)
    if signal_file.suffix.lower() == ".mat":
        digital = read_mat_v4(signal_file, n_channels, header.n_samples)
    else:
        digital = np.fromfile(signal_file, dtype="<i2", offset=header.offsets[0])
        if digital.size != header.n_samples * n_channels:
            raise RecordError(f"{signal_file.name} holds {digital.size} values, header expects "
                              f"{header.n_samples * n_channels}")
        digital = digital.reshape(header.n_samples, n_channels)
    physical = (digital - np.asarray(header.baselines, dtype=np.float64)) / np.asarray(header.gains)
    physical[digital == WFDB_INVALID_16] = np.nan
    return physical


def read_mat_v4(path: Path, n_channels: int, n_samples: int) -> np.ndarray:
    """The int16 samples (samples, channels) of a Challenge .mat signal file: one MATLAB variable `val`, channels x
    samples; RecordError naming what differs."""
    from scipy.io import loadmat
    try:
        variables = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise RecordError(f"{path.name} is not a MATLAB .mat file that can be read ({exc})") from None
    if "val" not in variables:
        raise RecordError(f"{path.name} holds {sorted(variables)}, not the variable 'val' a WFDB .mat signal file has")
    val = variables["val"]
    if val.shape != (n_channels, n_samples):
        raise RecordError(f"{path.name}: variable 'val' has shape {val.shape}, the header describes "
                          f"({n_channels} signals, {n_samples} samples)")
    return val.T


def check_file_sizes(folder: Path, header: Header) -> None:
    """RecordError naming a signal file shorter than its header's samples need (wfdb would give a numpy message)."""
    for name in dict.fromkeys(header.files):
        columns = [k for k, f in enumerate(header.files) if f == name]
        per_sample = BYTES_PER_SAMPLE.get(header.formats[columns[0]])
        path = folder / name
        if per_sample is None or not path.is_file():
            continue
        need = int(np.ceil(header.n_samples * len(columns) * per_sample)) + header.offsets[columns[0]]
        size = path.stat().st_size
        if size < need:
            raise RecordError(f"{name} holds {size} bytes, but {header.n_samples} samples of {len(columns)} signals "
                              f"in format {header.formats[columns[0]]} need {need}: the file is truncated")


def lead_order(names: tuple[str, ...], leads: tuple[str, ...] = STANDARD_LEADS) -> list[int]:
    """Column indices that put a record's leads in the order of `leads` (names matched case-insensitively, so
    aVR is AVR); RecordError naming the missing ones."""
    upper = [n.upper() for n in names]
    missing = [lead for lead in leads if lead.upper() not in upper]
    if missing:
        needed = "the standard 12" if tuple(leads) == STANDARD_LEADS else f"the {len(leads)} needed {list(leads)}"
        raise RecordError(f"has {len(names)} leads {list(names)}; missing {missing} of {needed}")
    return [upper.index(lead.upper()) for lead in leads]


def require_finite(x: np.ndarray) -> None:
    """RecordError when a signal holds NaN or Inf (WFDB's invalid samples read as NaN)."""
    if not np.isfinite(x).all():
        raise RecordError("has NaN or Inf samples")


def log_fixes(log: logging.Logger, fixes: Counter) -> None:
    """One warning per kind of fix the headers of a run's records needed (read_record counts them)."""
    for fix, count in fixes.items():
        log.warning("%d records read with a fix: %s", count, fix)


def read_record(record_path: Path, leads: tuple[str, ...] = STANDARD_LEADS,
                fixes: Counter | None = None) -> tuple[np.ndarray, float]:
    """Read a record as (len(leads), samples) float64 mV in the order of `leads`, plus its sampling rate; the fixes
    its header needed are counted in `fixes`."""
    hea = record_path.with_name(record_path.name + ".hea")
    if not hea.is_file():
        raise RecordError(f"{hea} not found")
    header = parse_header(hea)
    order = lead_order(header.names, leads)
    try:
        physical = read_physical(record_path, header)
    except RecordError:
        raise
    except (OSError, ValueError) as exc:
        raise RecordError(f"signal unreadable: {exc}") from exc
    require_finite(physical)
    if fixes is not None:
        fixes.update(header.fixes)
    return (physical[:, order] * np.asarray(header.to_mv)[order]).T, header.fs


def resample_ratio(fs_in: float, fs_out: float) -> Fraction:
    """Up/down factors of the polyphase resampling from fs_in to fs_out (denominator at most 1000)."""
    return Fraction(fs_out / fs_in).limit_denominator(1000)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased), from fs_in to fs_out."""
    if fs_in == fs_out:
        return x
    from scipy import signal as sps
    ratio = resample_ratio(fs_in, fs_out)
    return sps.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1)


@functools.lru_cache(maxsize=16)
def band_sos(fs: float, low: float, high: float) -> np.ndarray:
    """The 3rd-order Butterworth band-pass as second-order sections, designed once per (rate, band): designing it
    costs more than filtering a 10 s record."""
    from scipy import signal as sps
    return sps.butter(3, [low, high], btype="band", fs=fs, output="sos")


def bandpass(x: np.ndarray, fs: float, low: float, high: float) -> np.ndarray:
    """Zero-phase 3rd-order Butterworth band-pass along the last axis."""
    if not 0 < low < high < fs / 2:
        raise ValueError(f"band-pass {low}-{high} Hz must satisfy 0 < low < high < fs/2 = {fs / 2}")
    from scipy import signal as sps
    return sps.sosfiltfilt(band_sos(fs, low, high), x, axis=-1)


def resample_and_filter(x: np.ndarray, fs_in: float, fs_out: float, band: tuple[float, float] | None) -> np.ndarray:
    """What a record goes through before crop or pad, in preprocessing and prediction alike: resample, then band-pass."""
    x = resample(x, fs_in, fs_out)
    return x if band is None else bandpass(x, fs_out, *band)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop a longer signal, or zero-pad a shorter one at the end, to `length` samples."""
    n = x.shape[-1]
    if n >= length:
        start = (n - length) // 2
        return x[..., start : start + length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - n)])
