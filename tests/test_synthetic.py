"""Tests of the synthetic PTB-XL-layout demo dataset (demo/ecg.py, demo/dataset.py, make_demo_data.py)."""
import ast
import re
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import find_peaks, resample_poly

from common.cli import run_cli
from demo.dataset import SUPERCLASSES, generate_demo_dataset, plan_dataset, write_wfdb
from demo.ecg import LEADS, SCP_STATEMENTS, draw_patient, synthesize_ecg
from make_demo_data import main

N_RECORDS = 40
FS = 500


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "raw_data"
    generate_demo_dataset(root, n_records=N_RECORDS, seed=3, with_500hz=True, progress=False)
    return root


@pytest.fixture(scope="module")
def database(demo) -> pd.DataFrame:
    return pd.read_csv(demo / "ptbxl_database.csv", index_col="ecg_id")


@pytest.fixture(scope="module")
def statements(demo) -> pd.DataFrame:
    return pd.read_csv(demo / "scp_statements.csv", index_col=0)


def _superclasses(scp_codes: str, statements: pd.DataFrame) -> set[str]:
    """Superdiagnostic classes the way the pipeline derives them from scp_statements.csv."""
    diagnostic = statements[statements["diagnostic"] == 1]
    return {diagnostic.loc[c, "diagnostic_class"] for c in ast.literal_eval(scp_codes) if c in diagnostic.index}


def test_layout_and_csv_formats(demo, database):
    assert len(database) == N_RECORDS and list(database.index) == list(range(1, N_RECORDS + 1))
    for ecg_id, row in database.iterrows():
        folder = f"{ecg_id // 1000 * 1000:05d}"
        assert row["filename_lr"] == f"records100/{folder}/{ecg_id:05d}_lr"
        assert row["filename_hr"] == f"records500/{folder}/{ecg_id:05d}_hr"
        for name in (row["filename_lr"], row["filename_hr"]):
            assert (demo / f"{name}.hea").is_file() and (demo / f"{name}.dat").is_file()
    first_line = (demo / "ptbxl_database.csv").read_text().splitlines()[1]
    assert re.match(r"1,\d+\.0,\d+\.0,[01],\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\"\{'", first_line)
    assert database["strat_fold"].between(1, 10).all()
    assert (demo / "scp_statements.csv").read_text().startswith(
        ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass\n")


def test_wfdb_records_read_back(demo, database):
    row = database.iloc[0]
    low, low_fields = wfdb.rdsamp(str(demo / row["filename_lr"]))
    high, high_fields = wfdb.rdsamp(str(demo / row["filename_hr"]))
    assert low.shape == (1000, 12) and low_fields["fs"] == 100 and low_fields["sig_name"] == LEADS
    assert high.shape == (5000, 12) and high_fields["fs"] == 500 and high_fields["sig_name"] == LEADS
    assert high_fields["units"] == ["mV"] * 12
    assert wfdb.rdheader(str(demo / row["filename_lr"])).adc_gain == [1000.0] * 12
    np.testing.assert_allclose(high[:, 2], high[:, 1] - high[:, 0], atol=0.0025)
    np.testing.assert_allclose(high[:, 5], high[:, 1] - high[:, 0] / 2, atol=0.0025)
    np.testing.assert_allclose(resample_poly(high, 1, 5, axis=0, padtype="line"), low, atol=0.005)
    assert 0.5 < np.ptp(high[:, 1]) < 6


def test_writer_matches_wfdb_wrsamp(tmp_path):
    signal = np.random.default_rng(0).normal(0, 0.5, (1000, 12))
    write_wfdb(tmp_path / "ours" / "00001_lr", signal, 100)
    (tmp_path / "wfdb").mkdir()
    wfdb.wrsamp("00001_lr", fs=100, units=["mV"] * 12, sig_name=LEADS, p_signal=signal.copy(), fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path / "wfdb"))
    assert _files(tmp_path / "ours") == _files(tmp_path / "wfdb")


def test_same_seed_same_bytes_other_seed_differs(demo, tmp_path):
    again = tmp_path / "again"
    generate_demo_dataset(again, n_records=N_RECORDS, seed=3, with_500hz=True, progress=False)
    assert _files(again) == _files(demo)
    other = tmp_path / "other"
    generate_demo_dataset(other, n_records=N_RECORDS, seed=4, progress=False)
    assert (other / "ptbxl_database.csv").read_bytes() != (demo / "ptbxl_database.csv").read_bytes()
    assert not (other / "records500").exists()


def test_labels_codes_and_patients(demo, database, statements):
    assert database.groupby("patient_id")["strat_fold"].nunique().max() == 1
    assert database["patient_id"].nunique() < N_RECORDS
    classes = []
    for text in database["scp_codes"]:
        codes = ast.literal_eval(text)
        assert set(codes) <= set(statements.index)
        assert set(codes.values()) <= {0.0, 15.0, 35.0, 50.0, 80.0, 100.0}
        assert any(statements.loc[c, "rhythm"] == 1 for c in codes)
        classes.append(_superclasses(text, statements))
    assert set().union(*classes) == set(SUPERCLASSES)
    assert sum(len(c) > 1 for c in classes) >= 2
    labels = pd.read_csv(demo / "labels.csv")
    assert list(labels.columns) == ["record", "labels", "patient_id"]
    expected = [(row["filename_hr"], c, int(row["patient_id"]))
                for (_, row), c in zip(database.iterrows(), classes) if c]
    assert [(r, set(lab.split(";")), p) for r, lab, p in labels.itertuples(index=False)] == expected


def test_plan_folds_balanced_and_few_unlabelled():
    database, _ = plan_dataset(300, np.random.default_rng(0))
    sizes = database["strat_fold"].value_counts()
    assert len(sizes) == 10 and sizes.max() - sizes.min() <= 6
    assert 90 <= database["patient_id"].nunique() <= 160
    assert database.groupby("patient_id")["strat_fold"].nunique().max() == 1
    diagnostic = {code for code, (_, cls, *_) in SCP_STATEMENTS.items() if cls}
    unlabelled = [not set(ast.literal_eval(text)) & diagnostic for text in database["scp_codes"]]
    assert 0 < np.mean(unlabelled) < 0.08


def _r_peaks(lead: np.ndarray) -> np.ndarray:
    """R-peak samples of a clean lead with tall R waves, first and last beat dropped."""
    peaks, _ = find_peaks(lead, height=0.5 * lead.max(), distance=int(0.3 * FS))
    return peaks[1:-1]


def _clean_pair(code: str, patient_seed: int, severity: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free ECG of one patient without and with a finding (same beats)."""
    patient = draw_patient(np.random.default_rng(patient_seed))
    normal = synthesize_ecg({"NORM": 1.0}, np.random.default_rng(patient_seed), patient)
    abnormal = synthesize_ecg({code: severity}, np.random.default_rng(patient_seed), patient)
    return normal, abnormal


def _qrs_width(x: np.ndarray) -> float:
    """Median duration (s) where the summed absolute slope of all leads exceeds 10% of the beat's peak."""
    energy = np.abs(np.diff(x, axis=0)).sum(axis=1)
    peaks, _ = find_peaks(energy, height=0.5 * energy.max(), distance=int(0.3 * FS))
    half = int(0.12 * FS)
    widths = []
    for p in peaks[1:-1]:
        above = np.flatnonzero(energy[p - half:p + half] > 0.1 * energy[p])
        widths.append((above[-1] - above[0]) / FS)
    return float(np.median(widths))


def _level(x: np.ndarray, lead: str, peaks: np.ndarray, offset: float) -> float:
    """Median amplitude of a lead `offset` seconds after the R peaks, relative to the PR segment."""
    i = LEADS.index(lead)
    return float(np.median(x[peaks + int(offset * FS), i] - x[peaks - int(0.07 * FS), i]))


@pytest.mark.parametrize("code", ["CLBBB", "CRBBB"])
def test_bundle_branch_block_widens_qrs(code):
    for seed in range(4):
        normal, block = _clean_pair(code, seed)
        assert 0.05 < _qrs_width(normal) < 0.11
        assert _qrs_width(block) > _qrs_width(normal) + 0.025


def test_ischemia_depresses_st_and_inferior_mi_has_q_or_st_elevation():
    for seed in range(4):
        normal, ischemic = _clean_pair("ISC_", seed)
        peaks = _r_peaks(normal[:, LEADS.index("V5")])
        for lead in ("II", "AVF", "V5"):
            assert _level(ischemic, lead, peaks, 0.1) < _level(normal, lead, peaks, 0.1) - 0.05
        normal, infarct = _clean_pair("IMI", seed)
        peaks = _r_peaks(normal[:, LEADS.index("V5")])
        deeper_q = _level(infarct, "III", peaks, -0.024) < _level(normal, "III", peaks, -0.024) - 0.1
        st_up = _level(infarct, "III", peaks, 0.1) > _level(normal, "III", peaks, 0.1) + 0.05
        assert deeper_q or st_up


def test_hypertrophy_voltages():
    for seed in range(4):
        normal, lvh = _clean_pair("LVH", seed)
        sokolow = [-x[:, LEADS.index("V1")].min() + x[:, LEADS.index("V5")].max() for x in (normal, lvh)]
        assert sokolow[1] > sokolow[0] + 1.0
        _, rvh = _clean_pair("RVH", seed)
        v1 = rvh[:, LEADS.index("V1")]
        assert v1.max() > -v1.min()


def test_refuses_foreign_directory_and_replaces_demo(tmp_path):
    """A folder the generator did not write is never replaced, whatever the flags; its own earlier output is."""
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a demo dataset"):
        generate_demo_dataset(foreign, n_records=3, progress=False)
    with pytest.raises(SystemExit) as stop:
        main(["--out_dir", str(foreign), "--n_records", "3", "--overwrite"])
    assert stop.value.code == 2
    assert _files(foreign) == {"notes.txt": b"keep me"}
    demo = tmp_path / "demo"
    generate_demo_dataset(demo, n_records=3, progress=False)
    main(["--out_dir", str(demo), "--n_records", "4", "--seed", "1"])
    assert len(pd.read_csv(demo / "ptbxl_database.csv")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "mine"]


def test_cli_bad_out_dir_is_one_line_exit_2(tmp_path, capsys):
    """An --out_dir that runs through a file: exit 2 and one line naming --out_dir, not a traceback."""
    (tmp_path / "afile").write_text("x")
    assert run_cli(partial(main, ["--out_dir", str(tmp_path / "afile" / "demo"), "--n_records", "3"])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "afile" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]