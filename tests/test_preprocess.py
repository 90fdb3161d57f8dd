"""preprocess.py against the real PTB-XL sample, the generic CSV path and every bad input it must refuse."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from common import build
from common.build import PreprocessConfig, preprocess
from common.signals import STANDARD_LEADS

ROOT = Path(__file__).resolve().parents[1]


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
    meta = json.loads((sample_out / "meta.json").read_text())
    where = split_rows(sample_out)
    for ecg_id, classes in expected.items():
        split, row = where[ecg_id]
        y = np.load(sample_out / f"y_{split}.npy")[row]
        assert {meta["classes"][i] for i in np.flatnonzero(y)} == classes, ecg_id
    assert 17 not in where and 17 in meta["dropped_no_label"]["record_ids"]  # AFLT/AFIB only: no diagnostic class


def test_official_folds_and_patients_never_straddle(sample_dir, sample_out):
    database = pd.read_csv(sample_dir / "ptbxl_database.csv").set_index("ecg_id")
    meta = json.loads((sample_out / "meta.json").read_text())
    split_of_patient = {}
    for split, part in meta["splits"].items():
        folds = set(database.loc[part["record_ids"], "strat_fold"])
        assert folds == {"val": {8}, "test": {9}}.get(split, set(range(1, 8)))
        for patient in part["patient_ids"]:
            assert split_of_patient.setdefault(patient, split) == split


def test_signals_equal_rdsamp(sample_dir, sample_out):
    where = split_rows(sample_out)
    for ecg_id in (1, 8, 10, 12, 45, 77):
        split, row = where[ecg_id]
        expected, fields = wfdb.rdsamp(str(sample_dir / f"records100/00000/{ecg_id:05d}_lr"))
        assert [n.upper() for n in fields["sig_name"]] == list(STANDARD_LEADS)
        got = np.load(sample_out / f"X_{split}.npy", mmap_mode="r")[row]
        np.testing.assert_allclose(got, expected.T.astype(np.float32), rtol=0, atol=1e-6)


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
    np.testing.assert_allclose(np.load(out / f"X_{split}.npy")[row], expected.T, atol=1e-6)

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
    np.testing.assert_allclose(np.load(tmp_path / "single" / "X_train.npy")[0], expected.T, atol=1e-6)

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
    np.testing.assert_allclose(np.load(tmp_path / "o" / f"X_{split}.npy")[row], expected.T, atol=1e-6)


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
    assert not (foreign / "notes.txt").exists() and (foreign / "X_train.npy").is_file()


def test_interrupted_run_leaves_old_output_intact(sample_dir, sample_out, monkeypatch):
    before = {p.name: p.stat().st_mtime_ns for p in sample_out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "read_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=sample_out, val_folds=[8], test_folds=[9]), "t")
    assert {p.name: p.stat().st_mtime_ns for p in sample_out.iterdir()} == before
    assert not list(sample_out.parent.glob(f".{sample_out.name}.tmp-*"))
