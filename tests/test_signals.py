"""Recordings as other hospitals write them (issue 21): units converted to mV, header dialects read with a fix, the
Challenge's MATLAB v4 .mat signal files, per-record sampling rates, #Dx labels, and bad input named in one line."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from common import signals
from common.preprocess import PreprocessConfig, preprocess

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def ecg(n_samples: int, fs: float, seed: int = 0) -> np.ndarray:
    """A (samples, 12) test signal in mV: a few sines per lead plus noise, within +-2 mV."""
    t = np.arange(n_samples) / fs
    rng = np.random.default_rng(seed)
    leads = [np.sin(2 * np.pi * (1 + k / 5) * t + k) + 0.3 * np.sin(2 * np.pi * 9 * t) for k in range(12)]
    return (np.stack(leads, axis=1) + 0.05 * rng.standard_normal((n_samples, 12))).clip(-2, 2)


def write_challenge_record(folder: Path, name: str, mv: np.ndarray, fs: float, units: str = "mV",
                           gain_field: str | None = None, record_line_name: str | None = None,
                           dx: str | None = "426783006", variable: str = "val", shape: tuple | None = None) -> Path:
    """A record as the PhysioNet/CinC Challenge ships it: int16 `val` (leads x samples) in a MATLAB v4 .mat, a header
    whose signal lines read `NAME.mat 16+24 GAIN/UNITS ...`, and an optional #Dx line. Returns the record path."""
    per_unit = {"mV": 1000.0, "uV": 1.0, "V": 1e6, "mv": 1000.0}[units]  # ADC units per `units`, 1 uV resolution
    digital = np.round(mv * 1000).astype(np.int16).T
    folder.mkdir(parents=True, exist_ok=True)
    savemat(folder / f"{name}.mat", {variable: digital if shape is None else np.zeros(shape, np.int16)}, format="4")
    gain = gain_field if gain_field is not None else f"{per_unit:g}/{units}"
    lines = [f"{record_line_name or name} 12 {fs:g} {len(mv)}"]
    lines += [f"{name}.mat 16+24 {gain} 16 0 {int(digital[k, 0])} 0 0 {lead}" for k, lead in enumerate(LEADS)]
    if dx is not None:
        lines.append(f"#Dx: {dx}")
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / name


def test_the_same_signal_in_uv_mv_and_v_reads_as_the_same_millivolts(tmp_path):
    mv = ecg(5000, 500)
    read = {units: signals.read_record(write_challenge_record(tmp_path / units, "A1", mv, 500, units))[0]
            for units in ("uV", "mV", "V", "mv")}
    np.testing.assert_allclose(read["mV"], mv.T, atol=5e-4)  # the 1 uV ADC resolution
    for units in ("uV", "V", "mv"):
        np.testing.assert_allclose(read[units], read["mV"], rtol=0, atol=1e-12, err_msg=units)


def test_header_dialects_are_read_with_their_fix_counted(tmp_path):
    mv = ecg(5000, 500)
    plain = signals.read_record(write_challenge_record(tmp_path / "plain", "E1", mv, 500))[0]
    fixes = Counter()
    georgia = write_challenge_record(tmp_path / "georgia", "E1", mv, 500, record_line_name="E1.mat")
    np.testing.assert_array_equal(signals.read_record(georgia, fixes=fixes)[0], plain)
    assert fixes == Counter({signals.FIX_FILE_NAME: 1})
    # no gain field at all: WFDB's default 200 ADC units per mV (so the same ADC values read 5x larger than at 1000)
    header = (georgia.with_suffix(".hea")).read_text().splitlines()
    no_gain = [header[0]] + [" ".join(line.split()[:2]) for line in header[1:13]]
    georgia.with_suffix(".hea").write_text("\n".join(no_gain) + "\n")
    with pytest.raises(signals.RecordError, match=r"missing \['I', 'II'"):
        signals.read_record(georgia)  # without descriptions the leads are unnamed: the reason says so
    assert signals.parse_header(georgia.with_suffix(".hea")).gains == (200.0,) * 12
    assert signals.FIX_NO_GAIN in signals.parse_header(georgia.with_suffix(".hea")).fixes


@pytest.mark.parametrize("change, reason", [
    ({"gain_field": "0/mV"}, "gain '0' is not a calibration"),
    ({"gain_field": "-1000/mV"}, "gain '-1000' is not a calibration"),
    ({"gain_field": "1000/mmHg"}, "signal I is in units 'mmHg', not µV, mV or V"),
    ({"variable": "ecg"}, "A1.mat holds ['ecg'], not the variable 'val'"),
    ({"shape": (12, 10)}, "variable 'val' has shape (12, 10), the header describes (12 signals, 5000 samples)"),
])
def test_unusable_records_are_refused_naming_the_file_and_reason(tmp_path, change, reason):
    record = write_challenge_record(tmp_path, "A1", ecg(5000, 500), 500, **change)
    with pytest.raises(signals.RecordError) as raised:
        signals.read_record(record)
    assert reason in str(raised.value)


def test_a_truncated_format_212_file_is_named_with_its_size(tmp_path):
    import wfdb
    wfdb.wrsamp("r212", fs=100, units=["mV"] * 12, sig_name=LEADS, p_signal=ecg(1000, 100), fmt=["212"] * 12,
                write_dir=str(tmp_path))
    dat = tmp_path / "r212.dat"
    dat.write_bytes(dat.read_bytes()[:5000])
    with pytest.raises(signals.RecordError, match="r212.dat holds 5000 bytes, but 1000 samples of 12 signals in "
                                                  "format 212 need 18000: the file is truncated"):
        signals.read_record(tmp_path / "r212")


def test_a_challenge_folder_preprocesses_from_its_dx_lines_at_the_most_common_rate(tmp_path):
    raw = tmp_path / "raw"
    rates = [500] * 18 + [1000] * 6
    codes = ["164889003,59118001", "426783006", "164865005", "164873001", "55930002", "99999999"]
    for i, fs in enumerate(rates):
        write_challenge_record(raw / f"g{i % 2}", f"A{i:03d}", ecg(10 * fs, fs, seed=i), fs, ("mV", "uV")[i % 2],
                               dx=codes[i % len(codes)])
    meta = preprocess(PreprocessConfig(input_dir=raw, out_dir=tmp_path / "out", workers=1, val_frac=0.2,
                                       test_frac=0.2), "t")
    assert meta["fs"] == 500 and meta["length"] == 5000
    assert meta["signal"]["source_rates_hz"] == {"500": 15, "1000": 5}  # of the 20 labelled records
    assert meta["signal"]["unknown_codes"] == {"99999999": 4}
    assert meta["dropped_no_label"]["count"] == 4 and meta["classes"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    ids = [i for split in ("train", "val", "test") for i in meta["splits"][split]["record_ids"]]
    assert sorted(ids) == sorted(f"g{i % 2}/A{i:03d}" for i in range(24) if i % len(codes) != 5)
    y = {i: row for split in ("train", "val", "test")
         for i, row in zip(meta["splits"][split]["record_ids"], np.load(tmp_path / "out" / f"y_{split}.npy"))}
    assert y["g0/A000"].tolist() == [1, 0, 0, 0, 0]  # AF (no superclass) + RBBB (CD)
    assert y["g1/A001"].tolist() == [0, 0, 0, 1, 0]  # sinus rhythm alone: NORM


def test_the_same_records_in_uv_and_mv_give_the_same_data_dir(tmp_path):
    for units in ("mV", "uV"):
        for i in range(12):
            write_challenge_record(tmp_path / units, f"A{i:02d}", ecg(5000, 500, seed=i), 500, units,
                                   dx=("426783006", "59118001")[i % 2])
    metas = [preprocess(PreprocessConfig(input_dir=tmp_path / units, out_dir=tmp_path / f"out_{units}", workers=1,
                                         val_frac=0.25, test_frac=0.25, bandpass="off"), "t") for units in ("mV", "uV")]
    assert metas[0]["fingerprint"]["dataset"] == metas[1]["fingerprint"]["dataset"]
    assert json.dumps(metas[0]["normalisation"]) == json.dumps(metas[1]["normalisation"])
    # through the default band-pass the two differ only by float rounding, which filtering spreads
    for units in ("mV", "uV"):
        preprocess(PreprocessConfig(input_dir=tmp_path / units, out_dir=tmp_path / f"band_{units}", workers=1,
                                    val_frac=0.25, test_frac=0.25), "t")
    for name in ("X_train.npy", "X_val.npy", "X_test.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "band_uV" / name), np.load(tmp_path / "band_mV" / name),
                                   rtol=0, atol=1e-5, err_msg=name)
