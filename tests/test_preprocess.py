"""preprocess.py against the real PTB-XL sample, the generic CSV path and every bad input it must refuse."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import wfdb

from common import preprocess as stage
from common import readers
from common.datadir import staged_output_dir
from common.preprocess import DEFAULT_BAND, PreprocessConfig, preprocess
from common.signals import STANDARD_LEADS, bandpass
from conftest import ROOT, patched_script


@pytest.fixture(scope="module")
def sample_out(sample_dir, tmp_path_factory) -> Path:
    """The sample preprocessed with folds 8 / 9 as val / test, as in the issue's command."""
    out = tmp_path_factory.mktemp("sample") / "baseline"
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=out, val_folds=[8], test_folds=[9], workers=2), "test")
    return out


def split_rows(out: Path) -> dict:
    """record id -> (split, row) from meta.json."""
    meta = json.loads((out / "meta.json").read_text())
    return {rid: (split, i) for split, part in meta["splits"].items() for i, rid in enumerate(part["record_ids"])}


def labels_of(out: Path, record_ids: list[int]) -> dict[int, set[str]]:
    """Class names of each record's y row in a data dir."""
    classes = json.loads((out / "meta.json").read_text())["classes"]
    where = split_rows(out)
    return {rid: {classes[i] for i in np.flatnonzero(np.load(out / f"y_{where[rid][0]}.npy")[where[rid][1]])}
            for rid in record_ids}


def test_contract_files_shapes_and_dtypes(sample_out):
    meta = json.loads((sample_out / "meta.json").read_text())
    assert meta["classes"] == ["CD", "HYP", "MI", "NORM", "STTC"]
    assert meta["multilabel"] is True and meta["fs"] == 100 and meta["length"] == 1000
    assert meta["leads"] == list(STANDARD_LEADS)
    for split in ("train", "val", "test"):
        X = np.load(sample_out / f"X_{split}.npy", mmap_mode="r")
        y = np.load(sample_out / f"y_{split}.npy")
        assert X.dtype == np.float32 and X.shape == (meta["counts"][split], 12, 1000)
        assert y.dtype == np.float32 and y.shape == (len(X), 5)
        assert len(meta["splits"][split]["record_ids"]) == len(X)
    assert meta["fingerprint"]["dataset"] and meta["dropped_no_label"]["count"] == 9
    assert len(meta["normalisation"]["mean"]) == 12


def test_superdiagnostic_labels_of_known_records(sample_out):
    expected = {  # from each record's scp_codes and PTB-XL's scp_statements.csv, read by hand
        1: {"NORM"}, 8: {"MI"}, 26: {"STTC"}, 39: {"MI", "STTC"}, 45: {"CD", "HYP"}, 50: {"MI", "CD"}, 77: {"MI", "CD"},
    }
    assert labels_of(sample_out, list(expected)) == expected
    meta = json.loads((sample_out / "meta.json").read_text())
    assert 17 not in split_rows(sample_out) and 17 in meta["dropped_no_label"]["record_ids"]  # AFLT/AFIB only


def test_official_folds_and_patients_never_straddle(sample_dir, sample_out):
    database = pd.read_csv(sample_dir / "ptbxl_database.csv").set_index("ecg_id")
    meta = json.loads((sample_out / "meta.json").read_text())
    split_of_patient = {}
    for split, part in meta["splits"].items():
        folds = set(database.loc[part["record_ids"], "strat_fold"])
        assert folds == {"val": {8}, "test": {9}}.get(split, set(range(1, 8)))
        for patient in part["patient_ids"]:
            assert split_of_patient.setdefault(patient, split) == split


def as_stored(record: np.ndarray, fs: float) -> np.ndarray:
    """A record as wfdb.rdsamp reads it (samples x leads), as preprocess.py stores it by default: leads first,
    through the 0.5-40 Hz band-pass."""
    return bandpass(record.T, fs, *DEFAULT_BAND)


def test_signals_equal_rdsamp(sample_dir, sample_out):
    where = split_rows(sample_out)
    for ecg_id in (1, 8, 10, 12, 45, 77):
        split, row = where[ecg_id]
        expected, fields = wfdb.rdsamp(str(sample_dir / f"records100/00000/{ecg_id:05d}_lr"))
        assert [n.upper() for n in fields["sig_name"]] == list(STANDARD_LEADS)
        got = np.load(sample_out / f"X_{split}.npy", mmap_mode="r")[row]
        np.testing.assert_allclose(got, as_stored(expected, 100), rtol=0, atol=1e-6)
    assert json.loads((sample_out / "meta.json").read_text())["signal"]["bandpass_hz"] == list(DEFAULT_BAND)


def test_normalisation_stats_are_train_only(sample_out):
    meta = json.loads((sample_out / "meta.json").read_text())
    X = np.load(sample_out / "X_train.npy").astype(np.float64)
    np.testing.assert_allclose(meta["normalisation"]["mean"], X.mean(axis=(0, 2)), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(meta["normalisation"]["std"], X.std(axis=(0, 2)), rtol=1e-5)


def test_fractions_on_data_with_folds_say_which_split_was_used(sample_dir, tmp_path, caplog):
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "o", val_folds=[8], test_folds=[9],
                                       val_frac=0.1, test_frac=0.1, workers=1), "t")
    assert meta["split"]["method"] == "folds"
    assert "--val_frac/--test_frac are ignored" in caplog.text and "--split random" in caplog.text


def test_rerun_same_dataset_is_allowed_and_identical(sample_dir, sample_out):
    before = json.loads((sample_out / "meta.json").read_text())["fingerprint"]
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=sample_out, val_folds=[8], test_folds=[9], workers=1), "test")
    assert json.loads((sample_out / "meta.json").read_text())["fingerprint"] == before


def test_500hz_records_and_resampling(sample_dir, tmp_path):
    csv = tmp_path / "hr.csv"
    table = pd.read_csv(sample_dir / "ptbxl_database.csv")
    table[table.ecg_id <= 113].to_csv(csv, index=False)
    shutil.copy(sample_dir / "scp_statements.csv", tmp_path / "scp_statements.csv")
    out = tmp_path / "out"
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=csv, out_dir=out, length=5000,
                                       split="random", workers=2), "test")
    assert meta["fs"] == 500 and meta["signal"]["records_hz"] == 500
    where = split_rows(out)
    split, row = where[1]
    expected, _ = wfdb.rdsamp(str(sample_dir / "records500/00000/00001_hr"))
    np.testing.assert_allclose(np.load(out / f"X_{split}.npy")[row], as_stored(expected, 500), atol=1e-6)

    down = preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=csv, out_dir=tmp_path / "down", sampling_rate=500,
                                       fs=100, split="random", workers=1), "test")
    assert down["fs"] == 100 and down["length"] == 1000


def test_random_split_keeps_patients_together_and_stratifies(sample_dir, tmp_path):
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "r", split="random",
                                       val_frac=0.2, test_frac=0.2, seed=3, workers=1), "test")
    assert meta["split"]["method"] == "random"
    seen = {}
    for split, part in meta["splits"].items():
        for patient in part["patient_ids"]:
            assert seen.setdefault(patient, split) == split
    total = sum(meta["counts"].values())
    assert abs(meta["counts"]["val"] / total - 0.2) < 0.05 and abs(meta["counts"]["test"] / total - 0.2) < 0.05
    for cls in meta["classes"]:
        assert meta["class_counts"]["val"][cls] > 0 and meta["class_counts"]["test"][cls] > 0


def write_generic_csv(sample_dir: Path, path: Path, multilabel: bool) -> pd.DataFrame:
    """A generic labels CSV over the sample's 100 Hz records: record, labels, patient_id."""
    database = pd.read_csv(sample_dir / "ptbxl_database.csv").head(120)
    rows = pd.DataFrame({
        "record": database["filename_lr"],
        "labels": np.where(database.index % 5 == 0, "A;B", np.where(database.index % 2 == 0, "A", "B"))
        if multilabel else np.where(database.index % 2 == 0, "left", "right"),
        "patient_id": database["patient_id"],
    })
    rows.to_csv(path, index=False)
    return rows


def test_generic_csv_single_and_multi_label(sample_dir, tmp_path):
    rows = write_generic_csv(sample_dir, tmp_path / "single.csv", multilabel=False)
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=tmp_path / "single.csv",
                                       out_dir=tmp_path / "single", workers=1), "test")
    assert meta["format"] == "generic" and meta["multilabel"] is False and meta["classes"] == ["left", "right"]
    assert meta["split"]["method"] == "random"
    y = np.load(tmp_path / "single" / "y_train.npy")
    assert y.dtype == np.int64 and y.ndim == 1
    label_of = dict(zip(rows["record"], rows["labels"]))
    first = meta["splits"]["train"]["record_ids"][0]
    assert meta["classes"][y[0]] == label_of[first]
    expected, _ = wfdb.rdsamp(str(sample_dir / first))
    np.testing.assert_allclose(np.load(tmp_path / "single" / "X_train.npy")[0], as_stored(expected, 100), atol=1e-6)

    raw = copy_sample(sample_dir, tmp_path / "raw", 120)
    write_generic_csv(sample_dir, raw / "labels.csv", multilabel=True)
    multi = preprocess(PreprocessConfig(input_dir=raw, meta_csv=Path("labels.csv"), out_dir=tmp_path / "multi",
                                        workers=1), "test")  # a bare name is looked up inside --input_dir too
    assert multi["format"] == "generic" and multi["multilabel"] is True and multi["classes"] == ["A", "B"]
    y = np.load(tmp_path / "multi" / "y_train.npy")
    assert y.shape[1] == 2 and (y.sum(axis=1) == 2).any() and (y.sum(axis=1) == 1).any()


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run preprocess.py as a user would; return the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "preprocess.py"), *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_cli_missing_input_dir_and_csv(tmp_path):
    result = run_cli("--input_dir", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "o"))
    assert result.returncode != 0 and "is not a folder" in result.stderr
    result = run_cli("--input_dir", str(tmp_path), "--out_dir", str(tmp_path / "o"))
    assert result.returncode != 0 and "ptbxl_database.csv not found" in result.stderr
    assert not (tmp_path / "o").exists()


def test_csv_without_needed_columns_names_them(sample_dir, tmp_path):
    pd.DataFrame({"path": ["records100/00000/00001_lr"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="lacks the column\\(s\\) record, labels"):
        preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=tmp_path / "bad.csv", out_dir=tmp_path / "o"), "t")


def copy_sample(sample_dir: Path, dest: Path, n: int) -> Path:
    """A PTB-XL-layout copy of the first n records of the sample (100 Hz)."""
    database = pd.read_csv(sample_dir / "ptbxl_database.csv").head(n)
    (dest / "records100/00000").mkdir(parents=True)
    database.to_csv(dest / "ptbxl_database.csv", index=False)
    shutil.copy(sample_dir / "scp_statements.csv", dest)
    for name in database["filename_lr"]:
        for ext in (".hea", ".dat"):
            shutil.copy(sample_dir / f"{name}{ext}", dest / f"{name}{ext}")
    return dest


def test_bad_records_are_skipped_listed_and_bounded(sample_dir, tmp_path):
    raw = copy_sample(sample_dir, tmp_path / "raw", 60)
    (raw / "records100/00000/00002_lr.dat").unlink()  # absent
    digital = np.fromfile(raw / "records100/00000/00003_lr.dat", dtype="<i2")
    digital[50] = -32768  # WFDB's invalid sample: NaN
    digital.tofile(raw / "records100/00000/00003_lr.dat")
    six = wfdb.rdrecord(str(raw / "records100/00000/00004_lr"), channels=list(range(6)))
    wfdb.wrsamp("00004_lr", fs=100, units=six.units, sig_name=six.sig_name, p_signal=six.p_signal,
                fmt=["16"] * 6, adc_gain=[1000.0] * 6, baseline=[0] * 6, write_dir=str(raw / "records100/00000"))

    with pytest.raises(RuntimeError, match="more than --max_skip_frac"):
        preprocess(PreprocessConfig(input_dir=raw, out_dir=tmp_path / "o", split="random", workers=2), "t")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.tmp-*"))

    meta = preprocess(PreprocessConfig(input_dir=raw, out_dir=tmp_path / "o", split="random", workers=2,
                                       max_skip_frac=0.1), "t")
    reasons = {s["record_id"]: s["reason"] for s in meta["skipped"]}
    assert set(reasons) == {2, 3, 4}
    assert "NaN" in reasons[3] and "missing" in reasons[4] and "unreadable" in reasons[2]
    kept = sum(meta["counts"].values())
    assert kept == 60 - 3 - meta["dropped_no_label"]["count"]
    for split, count in meta["counts"].items():
        assert np.load(tmp_path / "o" / f"X_{split}.npy").shape[0] == count
        assert not ({2, 3, 4} & set(meta["splits"][split]["record_ids"]))
    where = split_rows(tmp_path / "o")
    split, row = where[5]
    expected, _ = wfdb.rdsamp(str(raw / "records100/00000/00005_lr"))
    np.testing.assert_allclose(np.load(tmp_path / "o" / f"X_{split}.npy")[row], as_stored(expected, 100), atol=1e-6)


def test_empty_split_is_refused(sample_dir, tmp_path):
    with pytest.raises(ValueError, match="the test split is empty"):
        preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "o"), "t")  # fold 10 is absent
    with pytest.raises(ValueError, match="no record has a label"):
        write_generic_csv(sample_dir, tmp_path / "g.csv", multilabel=False)
        pd.read_csv(tmp_path / "g.csv").assign(labels="").to_csv(tmp_path / "g.csv", index=False)
        preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=tmp_path / "g.csv", out_dir=tmp_path / "o"), "t")


def test_length_that_would_be_mostly_padding_is_refused(sample_dir, tmp_path):
    write_generic_csv(sample_dir, tmp_path / "g.csv", multilabel=False)
    with pytest.raises(ValueError, match="--length 5000 is 50 s at 100 Hz.*pass --length 1000"):
        preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=tmp_path / "g.csv", out_dir=tmp_path / "o",
                                    length=5000), "t")
    raw = copy_sample(sample_dir, tmp_path / "raw", 30)
    with pytest.raises(ValueError, match="500 Hz records .* are not in --input_dir"):
        preprocess(PreprocessConfig(input_dir=raw, out_dir=tmp_path / "o", length=5000), "t")


def test_foreign_out_dir_refused_unless_overwrite(sample_dir, sample_out, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cfg = PreprocessConfig(input_dir=sample_dir, out_dir=foreign, val_folds=[8], test_folds=[9], workers=1)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        preprocess(cfg, "t")
    assert (foreign / "notes.txt").read_text() == "mine"
    other = PreprocessConfig(input_dir=sample_dir, out_dir=sample_out, val_folds=[7], test_folds=[9])
    with pytest.raises(FileExistsError, match="different dataset"):
        preprocess(other, "t")
    cfg.overwrite = True
    preprocess(cfg, "t")
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "X_train.npy").is_file()


def test_interrupted_run_leaves_old_output_intact(sample_dir, sample_out, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in sample_out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "read_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=sample_out, val_folds=[8], test_folds=[9]), "t")
    assert {p.name: p.stat().st_mtime_ns for p in sample_out.iterdir()} == before
    assert not list(sample_out.parent.glob(f".{sample_out.name}.tmp-*"))


def test_codes_with_likelihood_zero_count_as_in_the_benchmark(sample_out):
    # scp_codes of the sample and PTB-XL's scp_statements.csv, read by hand; the 0.0 codes are NST_ (STTC):
    # 263 {ASMI: 50, NST_: 0, STACH: 0}, 321 {EL: 50, NST_: 0, AFIB: 0}, 351 {AFIB: 100, NST_: 0},
    # 412 {NDT: 100, NST_: 0, SR: 0}, 482 {ASMI: 100, IMI: 50, IRBBB: 100, LAFB: 100, NST_: 0, AFIB: 0}
    expected = {263: {"MI", "STTC"}, 321: {"STTC"}, 351: {"STTC"}, 412: {"STTC"}, 482: {"MI", "CD", "STTC"}}
    assert labels_of(sample_out, list(expected)) == expected


def write_header_lines(hea: Path, edit) -> None:
    """Rewrite a header's text with edit(lines) -> lines."""
    hea.write_text("\n".join(edit(hea.read_text().splitlines())) + "\n")


def test_malformed_headers_are_skipped_and_named(sample_dir, tmp_path):
    raw = copy_sample(sample_dir, tmp_path / "raw", 80)
    folder = raw / "records100/00000"
    write_header_lines(folder / "00002_lr.hea", lambda ls: [ls[0].replace(" 100 ", " hundred ")] + ls[1:])
    (folder / "00003_lr.hea").write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes())
    write_header_lines(folder / "00004_lr.hea", lambda ls: [ls[0], ls[1].replace("1000.0(0)", "0(0)")] + ls[2:])
    write_header_lines(folder / "00005_lr.hea", lambda ls: ls[:3] + [ls[3].replace("1000.0(0)", "gain(0)")] + ls[4:])
    meta = preprocess(PreprocessConfig(input_dir=raw, out_dir=tmp_path / "o", split="random", workers=2,
                                       max_skip_frac=0.1), "t")
    reasons = {s["record_id"]: s["reason"] for s in meta["skipped"]}
    assert set(reasons) == {2, 3, 4, 5}
    for ecg_id, reason in reasons.items():
        assert f"{folder / f'{ecg_id:05d}_lr.hea'}" in reason
    assert "sampling rate 'hundred' is not a number" in reasons[2] and "unreadable" in reasons[3]
    assert "gain '0(0)' is not a calibration" in reasons[4] and "gain 'gain' is not a number" in reasons[5]
    assert sum(meta["counts"].values()) == 80 - 4 - meta["dropped_no_label"]["count"]


def test_fs_500_reads_the_500hz_records_when_they_exist(sample_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    csv = tmp_path / "hr.csv"
    pd.read_csv(sample_dir / "ptbxl_database.csv").query("ecg_id <= 113").to_csv(csv, index=False)
    shutil.copy(sample_dir / "scp_statements.csv", tmp_path / "scp_statements.csv")
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=csv, out_dir=tmp_path / "o", fs=500,
                                       split="random", workers=1), "t")
    assert meta["signal"]["records_hz"] == 500 and meta["length"] == 5000
    assert "--fs 500 needs more than 100 Hz" in meta["signal"]["why"] and meta["signal"]["why"] in caplog.text
    assert "default" not in caplog.text
    split, row = split_rows(tmp_path / "o")[1]
    expected, _ = wfdb.rdsamp(str(sample_dir / "records500/00000/00001_hr"))
    np.testing.assert_allclose(np.load(tmp_path / "o" / f"X_{split}.npy")[row], as_stored(expected, 500), atol=1e-6)

    raw = copy_sample(sample_dir, tmp_path / "raw", 30)  # 100 Hz only
    up = preprocess(PreprocessConfig(input_dir=raw, out_dir=tmp_path / "up", fs=500, split="random", workers=1), "t")
    assert up["signal"]["records_hz"] == 100 and up["length"] == 5000
    assert "records500/) are not in --input_dir" in up["signal"]["why"] and "resampled up" in up["signal"]["why"]


@pytest.mark.parametrize("option, message", [
    ({"length": 0}, "--length must be a positive number of samples, got 0"),
    ({"length": -5}, "--length must be a positive number of samples, got -5"),
    ({"fs": 0.0}, "--fs must be a positive rate in Hz, got 0"),
    ({"fs": -100.0}, "--fs must be a positive rate in Hz, got -100"),
    ({"bandpass": (40.0, 0.5)}, "--bandpass LOW HIGH needs 0 < LOW < HIGH"),
    ({"bandpass": (0.5, 60.0)}, "--bandpass high edge 60 Hz must be below half the rate, 50 Hz"),
    ({"bandpass": "lowpass"}, "--bandpass takes LOW HIGH (Hz), auto or off, got 'lowpass'"),
    ({"max_skip_frac": -0.1}, "--max_skip_frac must be between 0 and 1"),
])
def test_values_that_are_not_allowed_are_refused(sample_dir, tmp_path, option, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "o", val_folds=[8], test_folds=[9],
                                    workers=1, **option), "t")
    assert not (tmp_path / "o").exists()


def test_bandpass_off_stores_the_records_as_read_and_auto_needs_a_rate_above_80_hz(sample_dir, tmp_path, caplog):
    caplog.set_level("INFO")
    folds = {"val_folds": [8], "test_folds": [9], "workers": 1}
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "off", bandpass="off", **folds), "t")
    assert meta["signal"]["bandpass_hz"] is None and meta["config"]["bandpass"] == "off"
    split, row = split_rows(tmp_path / "off")[1]
    expected, _ = wfdb.rdsamp(str(sample_dir / "records100/00000/00001_lr"))
    np.testing.assert_allclose(np.load(tmp_path / "off" / f"X_{split}.npy")[row], expected.T, rtol=0, atol=1e-6)

    meta = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "low", fs=50, **folds), "t")
    assert meta["signal"]["bandpass_hz"] is None
    assert "no band-pass filter: the default 0.5-40 Hz needs a rate above 80 Hz, and the data is at 50 Hz" in caplog.text


@pytest.mark.parametrize("values", [["1", "2", "3"], ["low", "high"], ["on"]])
def test_a_bandpass_that_is_not_two_numbers_auto_or_off_is_refused(values, tmp_path):
    done = run_cli("--input_dir", str(tmp_path), "--bandpass", *values)
    assert done.returncode == 2
    assert f"--bandpass takes LOW HIGH (two numbers, Hz), auto or off, got {' '.join(values)}" in done.stderr


def test_bad_csv_messages_name_the_file(sample_dir, tmp_path):
    rows = write_generic_csv(sample_dir, tmp_path / "g.csv", multilabel=False)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(f"record,labels\n{rows['record'][0]},Störung\n".encode("latin-1"))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    folds = tmp_path / "folds.csv"
    rows.assign(fold=[1, 2, "x"] + [3] * (len(rows) - 3)).to_csv(folds, index=False)
    database = tmp_path / "ptbxl" / "ptbxl_database.csv"
    database.parent.mkdir()
    pd.read_csv(sample_dir / "ptbxl_database.csv").assign(strat_fold=lambda t: t["strat_fold"].astype(str).str.replace(
        "3", "3.5")).to_csv(database, index=False)
    shutil.copy(sample_dir / "scp_statements.csv", database.parent)
    cases = [(latin, "is not UTF-8 text"), (empty, "is empty"),
             (folds, "row 3: column fold must hold whole numbers, found 'x'"),
             (database, "column strat_fold must hold whole numbers, found '3.5'")]
    for csv, message in cases:
        with pytest.raises(ValueError, match=re.escape(str(csv)) + ".*" + re.escape(message)):
            preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=csv, out_dir=tmp_path / "o"), "t")
    result = run_cli("--input_dir", str(sample_dir), "--meta_csv", str(latin), "--out_dir", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: labels CSV {latin} is not UTF-8 text")


def reader_workers(pid: int) -> list[int]:
    """Ids of the live reader processes below pid (spawn also starts multiprocessing's resource tracker there)."""
    found = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child.pid)
    return found


def running(pid: int) -> bool:
    """True while pid is a process that is neither gone nor a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# Imported again as __mp_main__ by each worker that spawn starts, so the workers read slowly too.
SLOW_READER = """import runpy, sys, time
sys.path.insert(0, {root!r})
import common.readers as stage
prepare = stage.prepare_signal
stage.prepare_signal = lambda *args: (time.sleep(0.01), prepare(*args))[1]  # reading lasts seconds, not 0.2 s
if __name__ == "__main__":
    sys.argv = {argv!r}
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_and_signal_when_reading(args: list[str], signum: int, tmp_path: Path) -> tuple[int, str, list[int]]:
    """Start preprocess.py with a slowed-down reader, send it signum while its two reader workers run; return its
    exit status, stderr and those workers."""
    argv = [str(ROOT / "preprocess.py"), *args]
    wrapper = tmp_path / "slow_preprocess.py"
    wrapper.write_text(SLOW_READER.format(root=str(ROOT), argv=argv))
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([sys.executable, str(wrapper)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                                text=True)
        deadline = time.monotonic() + 60
        workers = []
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            workers = reader_workers(proc.pid)
        assert len(workers) == 2, "the run never had its two reader workers running"
        os.kill(proc.pid, signum)
        proc.wait(timeout=60)
        stderr.seek(0)
        return proc.returncode, stderr.read(), workers


def assert_all_ended(pids: list[int]) -> None:
    """Every pid ends within a few seconds (those that do not are killed, then the test fails)."""
    deadline = time.monotonic() + 10
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p for p in pids if running(p)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "reader workers outlived their parent"


def arrays_of(out: Path) -> dict[str, np.ndarray]:
    """Every .npy array of a data dir by file name."""
    return {p.name: np.load(p) for p in sorted(out.glob("*.npy"))}


@pytest.mark.slow
@pytest.mark.posix_signals
def test_killed_run_leaves_no_workers_and_the_rerun_completes_it(sample_dir, tmp_path):
    args = ["--input_dir", str(sample_dir), "--out_dir", str(tmp_path / "o"), "--val_folds", "8", "--test_folds", "9",
            "--workers", "2"]
    reference = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=tmp_path / "ref", val_folds=[8],
                                            test_folds=[9], workers=2), "t")
    status, _, workers = start_and_signal_when_reading(args, signal.SIGKILL, tmp_path)  # first run, nothing there
    assert_all_ended(workers)
    assert status == -signal.SIGKILL
    assert list(tmp_path.glob(".o.tmp-*")) and not (tmp_path / "o").exists()
    assert run_cli(*args).returncode == 0
    assert not list(tmp_path.glob(".o.*"))
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["fingerprint"] == reference["fingerprint"]
    expected = arrays_of(tmp_path / "ref")
    for name, array in arrays_of(tmp_path / "o").items():
        np.testing.assert_array_equal(array, expected[name], err_msg=name)

    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").iterdir()}
    status, _, workers = start_and_signal_when_reading(args, signal.SIGKILL, tmp_path)  # again, over finished output
    assert_all_ended(workers)
    assert status == -signal.SIGKILL
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").iterdir()} == before
    assert run_cli(*args).returncode == 0
    assert not list(tmp_path.glob(".o.*"))
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["fingerprint"] == reference["fingerprint"]


@pytest.mark.slow
@pytest.mark.posix_signals
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_stops_workers_and_removes_the_temporary_folder(sample_dir, sample_out, signum, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in sample_out.iterdir()}
    args = ["--input_dir", str(sample_dir), "--out_dir", str(sample_out), "--val_folds", "8", "--test_folds", "9",
            "--workers", "2", "--overwrite"]
    status, stderr, workers = start_and_signal_when_reading(args, signum, tmp_path)
    assert_all_ended(workers)
    assert status == 128 + signum and "Traceback" not in stderr
    assert f"interrupted by {signal.Signals(signum).name}\n" in stderr
    assert {p.name: p.stat().st_mtime_ns for p in sample_out.iterdir()} == before
    assert not list(sample_out.parent.glob(f".{sample_out.name}.*"))


# Reader workers that die as they start, as a spawned worker does when it cannot import the main script again;
# multiprocessing.Pool replaces such workers forever.
BROKEN_WORKERS = """import common.readers as stage
stage.START_SECONDS = 3
stage.start_worker = lambda: sys.exit("this worker cannot start")"""


@pytest.mark.slow
@pytest.mark.linux_only  # fork carries the patched worker set-up into the workers; spawn would import the real one
def test_reader_workers_that_cannot_start_fail_the_run_instead_of_hanging(sample_dir, tmp_path):
    args = ["--input_dir", sample_dir, "--out_dir", tmp_path / "o", "--val_folds", "8", "--test_folds", "9",
            "--workers", "2"]
    done = subprocess.run(patched_script(ROOT / "preprocess.py", args, BROKEN_WORKERS), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: no reader worker started within 3 s (their errors are printed above); pass --workers 1" in done.stderr
    assert list(tmp_path.iterdir()) == []


def signals_caught(pid: int) -> int:
    """The SigCgt mask of a process: bit n - 1 is set when it handles signal n."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.linux_only  # waits for the handler by reading /proc/PID/status; Windows has no SIGINT to send
def test_ctrl_c_at_start_up_is_one_line_and_exit_130(tmp_path):
    proc = subprocess.Popen([sys.executable, str(ROOT / "preprocess.py"), "--input_dir", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 5
    while not signals_caught(proc.pid) & (1 << (signal.SIGTERM - 1)) and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGINT)  # while numpy, pandas and scipy are still being imported
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr == "interrupted by SIGINT\n"


def test_next_run_clears_only_what_killed_runs_left(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = ended.pid
    out = tmp_path / "o"
    (tmp_path / f".o.old-{dead}").write_text("previous output, moved aside when its run was killed")
    stale = tmp_path / f".o.tmp-{dead}-k2j4x_9q"
    (stale / "deep").mkdir(parents=True)
    kept = [tmp_path / f".o.tmp-{os.getpid()}-live1234", tmp_path / f".other.tmp-{dead}-abcdefgh",
            tmp_path / ".o.tmp-abcdefgh", tmp_path / f"o.tmp-{dead}-abcdefgh", tmp_path / f".o.old-{dead}.notes"]
    for path in kept:
        path.mkdir()
    with staged_output_dir(out) as stage:
        assert out.read_text().startswith("previous output") and not stale.exists()
        (stage / "X.npy").write_text("new")
    assert (out / "X.npy").read_text() == "new"
    assert sorted(tmp_path.iterdir()) == sorted([out, *kept])


@pytest.mark.slow
def test_a_regular_file_at_out_dir_is_never_replaced(sample_dir, tmp_path):
    (tmp_path / "o").write_text("a file where the data dir goes")
    for overwrite in ([], ["--overwrite"]):
        result = run_cli("--input_dir", str(sample_dir), "--out_dir", str(tmp_path / "o"), "--val_folds", "8",
                         "--test_folds", "9", "--workers", "1", *overwrite)
        assert result.returncode == 2 and f"--out_dir {tmp_path / 'o'} is a file, which preprocess.py did not " \
            "write and does not replace, even with --overwrite" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert (tmp_path / "o").read_text() == "a file where the data dir goes"


def test_drop_rows_compacts_in_place_chunk_by_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_BYTES", 3 * 12 * 7 * 4)  # three rows per chunk: many chunks
    X = np.random.default_rng(0).standard_normal((40, 12, 7)).astype(np.float32)
    path = tmp_path / "X.npy"
    np.save(path, X)
    drop = [0, 5, 6, 7, 19, 39]
    readers.drop_rows(path, drop)
    np.testing.assert_array_equal(np.load(path), np.delete(X, drop, axis=0))
    assert path.stat().st_size == np.load(path, mmap_mode="r").offset + 34 * 12 * 7 * 4
