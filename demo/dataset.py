"""Seeded demo dataset in PhysioNet PTB-XL layout, generated locally (no download).

Patients, their recordings and SCP statements are drawn from a seed, each record is synthesised
by demo.ecg, and the files are written as PTB-XL ships them: WFDB records100/ (and records500/),
ptbxl_database.csv, scp_statements.csv, plus a generic labels.csv.
"""

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from scipy.signal import resample_poly
from tqdm import tqdm

from common.datadir import staged_output_dir
from common.splits import patient_folds
from demo.ecg import FS_HIGH, LEADS, SCP_STATEMENTS, draw_patient, synthesize_ecg

SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
FS_LOW = 100
MARKER = "demo_dataset.json"
N_FOLDS = 10

# None stands for a record with rhythm/form statements only (no superdiagnostic label)
CLASS_PROBABILITY = {"NORM": 0.42, "MI": 0.20, "STTC": 0.14, "CD": 0.14, "HYP": 0.07, None: 0.03}
CODE_PROBABILITY = {
    "MI": {"IMI": 0.4, "ASMI": 0.3, "AMI": 0.15, "ILMI": 0.15},
    "STTC": {"NDT": 0.3, "NST_": 0.2, "ISC_": 0.25, "ISCAL": 0.25},
    "CD": {"CLBBB": 0.2, "CRBBB": 0.25, "IRBBB": 0.15, "LAFB": 0.2, "1AVB": 0.2},
    "HYP": {"LVH": 0.6, "RVH": 0.15, "LAO/LAE": 0.25},
}
SECOND_CLASS_PROBABILITY = 0.3
SECOND_CLASS = {
    "MI": {"STTC": 0.6, "CD": 0.25, "HYP": 0.15},
    "STTC": {"MI": 0.4, "HYP": 0.4, "CD": 0.2},
    "CD": {"HYP": 0.5, "MI": 0.3, "STTC": 0.2},
    "HYP": {"CD": 0.5, "STTC": 0.5},
}
STUDY_START = np.datetime64("1989-10-01T00:00:00")
STUDY_DAYS = 2460


def _pick(options: Mapping, rng: np.random.Generator):
    """One key of {option: probability}."""
    keys = list(options)
    return keys[rng.choice(len(keys), p=np.array(list(options.values())) / sum(options.values()))]


def _severity(rng: np.random.Generator) -> float:
    """How pronounced a finding is: mostly clear, sometimes borderline."""
    return float(0.15 + 0.85 * rng.beta(2.0, 1.4))


def _draw_findings(rng: np.random.Generator) -> dict[str, float]:
    """Diagnostic SCP codes with severities: NORM, one abnormal class, sometimes a second one; {} = none."""
    first = _pick(CLASS_PROBABILITY, rng)
    if first is None:
        return {}
    if first == "NORM":
        return {"NORM": float(0.15 + 0.85 * rng.beta(6.0, 1.0))}
    classes = [first]
    if rng.random() < SECOND_CLASS_PROBABILITY:
        classes.append(_pick(SECOND_CLASS[first], rng))
    return {_pick(CODE_PROBABILITY[cls], rng): _severity(rng) for cls in classes}


def _draw_noise(rng: np.random.Generator) -> dict[str, float]:
    """Noise amplitudes (mV): most records clean, a tail of noisy ones."""
    quality = rng.beta(1.3, 5.0)
    return {
        "baseline": float(quality * rng.uniform(0.2, 1.2)),
        "emg": float(quality * rng.uniform(0.01, 0.1)),
        "hum": float(quality * rng.uniform(0.0, 0.08) * (rng.random() < 0.3)),
    }


def _draw_record(patient: dict, rng: np.random.Generator) -> dict:
    """One recording of a patient: findings (often the patient's usual ones), form codes, rhythm and noise."""
    if rng.random() < 0.75:
        findings = {code: float(np.clip(s + rng.normal(0, 0.08), 0.15, 1.0)) for code, s in patient["findings"].items()}
    else:
        findings = _draw_findings(rng)
    afib = bool(findings) and "NORM" not in findings and rng.random() < 0.06
    if not findings:
        afib = rng.random() < 0.3
        if not afib:
            findings[_pick({"LVOLT": 0.5, "ABQRS": 0.5}, rng)] = 1.0
    elif "NORM" not in findings:
        if rng.random() < (0.35 if any(SCP_STATEMENTS[c][1] == "MI" for c in findings) else 0.04):
            findings["ABQRS"] = 1.0
        if rng.random() < 0.04:
            findings["LVOLT"] = 1.0
    hr = rng.uniform(70, 115) if afib else float(np.clip(patient["hr"] + rng.normal(0, 6), 50, 110))
    return {"findings": findings, "afib": afib, "hr": hr, "noise": _draw_noise(rng)}


def _likelihood(severity: float) -> float:
    """PTB-XL-style statement likelihood (15 .. 100) from how pronounced the finding is."""
    return (15.0, 35.0, 50.0, 80.0, 100.0)[int(np.searchsorted([0.25, 0.35, 0.45, 0.6], severity))]


def _scp_codes(record: Mapping) -> dict[str, float]:
    """scp_codes of a record: diagnostic likelihoods, then form and rhythm statements at 0.0."""
    codes = {c: (_likelihood(s) if SCP_STATEMENTS[c][1] else 0.0) for c, s in record["findings"].items()}
    codes = dict(sorted(codes.items(), key=lambda item: SCP_STATEMENTS[item[0]][1] is None))
    if record["afib"]:
        codes["AFIB"] = 0.0
    else:
        codes["SBRAD" if record["hr"] < 60 else "STACH" if record["hr"] > 100 else "SR"] = 0.0
    return codes


def superclasses(findings: Mapping[str, float]) -> list[str]:
    """Superdiagnostic classes of a record's codes, in SUPERCLASSES order."""
    present = {SCP_STATEMENTS[code][1] for code in findings}
    return [cls for cls in SUPERCLASSES if cls in present]


def _records_per_patient(n_records: int, rng: np.random.Generator) -> np.ndarray:
    """Records of each patient (1 + Poisson), summing to n_records."""
    counts = 1 + rng.poisson(1.3, size=n_records)
    total = np.cumsum(counts)
    n_patients = int(np.searchsorted(total, n_records)) + 1
    counts = counts[:n_patients]
    counts[-1] -= total[n_patients - 1] - n_records
    return counts


def _record_path(ecg_id: int, fs: int) -> str:
    """PTB-XL record path without extension: records100/01000/01234_lr."""
    folder, suffix = ("records500", "hr") if fs == FS_HIGH else ("records100", "lr")
    return f"{folder}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{suffix}"


def plan_dataset(n_records: int, rng: np.random.Generator) -> tuple[pd.DataFrame, list[dict]]:
    """ptbxl_database table and, row for row, what to synthesise (patient, findings, rhythm, noise)."""
    counts = _records_per_patient(n_records, rng)
    records = []
    patient_ids = 1 + rng.choice(max(21999, len(counts)), size=len(counts), replace=False)
    for patient_id, count in zip(patient_ids, counts):
        patient = draw_patient(rng) | {"id": float(patient_id), "findings": _draw_findings(rng)}
        first_day = np.floor(rng.uniform(0, STUDY_DAYS))
        gaps = np.floor(np.cumsum(np.r_[0.0, rng.exponential(150.0, count - 1)]))
        days = first_day + gaps + rng.uniform(0.3, 0.8, count)
        for day in days:
            records.append(_draw_record(patient, rng) | {"patient": patient, "day": day, "first_day": first_day})
    records.sort(key=lambda record: record["day"])
    n = len(records)
    ecg_ids = np.arange(1, n + 1)
    patient_ids = np.array([r["patient"]["id"] for r in records])
    y = np.array([[cls in superclasses(r["findings"]) for cls in SUPERCLASSES] for r in records], dtype=float)
    folds = patient_folds(patient_ids, N_FOLDS, seed=0, y=y) + 1
    seconds = np.array([r["day"] for r in records]) * 86400
    database = pd.DataFrame({
        "ecg_id": ecg_ids,
        "patient_id": patient_ids,
        "age": [np.floor(r["patient"]["age"] + (r["day"] - r["first_day"]) / 365.25) for r in records],
        "sex": [r["patient"]["sex"] for r in records],
        "recording_date": STUDY_START + seconds.astype("timedelta64[s]"),
        "scp_codes": [str(_scp_codes(r)) for r in records],
        "validated_by_human": (folds >= 9) | (rng.random(n) < 0.7),
        "baseline_drift": [", alles," if r["noise"]["baseline"] > 0.25 else "" for r in records],
        "static_noise": [", alles," if r["noise"]["emg"] > 0.03 else "" for r in records],
        "strat_fold": folds,
        "filename_lr": [_record_path(i, FS_LOW) for i in ecg_ids],
        "filename_hr": [_record_path(i, FS_HIGH) for i in ecg_ids],
    })
    return database, records


def scp_statements_table() -> pd.DataFrame:
    """scp_statements.csv content: code index, description, diagnostic/form/rhythm flags (1.0 or empty), classes."""
    rows = {
        code: {"description": desc, "diagnostic": 1.0 if cls else np.nan, "form": 1.0 if form else np.nan,
               "rhythm": 1.0 if rhythm else np.nan,
               "diagnostic_class": cls, "diagnostic_subclass": sub}
        for code, (desc, cls, sub, form, rhythm) in SCP_STATEMENTS.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def _wfdb_record(name: str, signal: np.ndarray, fs: int) -> wfdb.Record:
    """WFDB record of a 12-lead mV signal as PTB-XL stores it: format 16, 1000 adu/mV, baseline 0."""
    n = len(LEADS)
    record = wfdb.Record(record_name=name, n_sig=n, fs=fs, sig_len=len(signal), p_signal=signal,
                         file_name=[f"{name}.dat"] * n, fmt=["16"] * n, adc_gain=[1000.0] * n, baseline=[0] * n,
                         units=["mV"] * n, sig_name=LEADS, adc_res=[16] * n, adc_zero=[0] * n, block_size=[0] * n)
    record.set_d_features(do_adc=True)
    return record


@functools.cache
def _wfdb_write_fields() -> tuple[list, dict]:
    """Header fields wfdb.wrsamp writes for such a record; wfdb takes ~30 ms to work them out, so once only."""
    record_fields, signal_fields = _wfdb_record("template", np.zeros((1, len(LEADS))), FS_LOW).get_write_fields()
    signal_fields.pop("samps_per_frame", None)
    return record_fields, signal_fields


def write_wfdb(path: Path, signal: np.ndarray, fs: int) -> None:
    """Write path.hea/.dat byte-identical to wfdb.wrsamp, minus its per-call field checks (5x faster)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = _wfdb_record(path.name, signal, fs)
    record.wr_header_file(*_wfdb_write_fields(), write_dir=str(path.parent))
    record.wr_dat_files(write_dir=str(path.parent))


def _write_dataset(root: Path, n_records: int, seed: int, with_500hz: bool, progress: bool) -> dict:
    """Write every file of the dataset into root and return its summary."""
    rng = np.random.default_rng(seed)
    database, records = plan_dataset(n_records, rng)
    for row, record in tqdm(zip(database.itertuples(), records), total=len(records), desc="demo ECGs",
                            unit="record", disable=not progress):
        signal = synthesize_ecg(record["findings"], rng, record["patient"], record["hr"], record["afib"],
                                record["noise"])
        write_wfdb(root / row.filename_lr, resample_poly(signal, 1, FS_HIGH // FS_LOW, axis=0, padtype="line"), FS_LOW)
        if with_500hz:
            write_wfdb(root / row.filename_hr, signal, FS_HIGH)
    database.to_csv(root / "ptbxl_database.csv", index=False)
    scp_statements_table().to_csv(root / "scp_statements.csv")
    classes = [superclasses(r["findings"]) for r in records]
    record_column = database["filename_hr" if with_500hz else "filename_lr"]
    labels = pd.DataFrame({"record": record_column, "labels": [";".join(c) for c in classes],
                           "patient_id": database["patient_id"].astype(int)})
    labels[[bool(c) for c in classes]].to_csv(root / "labels.csv", index=False)
    listed = [database["filename_lr"], database["filename_hr"]] if with_500hz else [database["filename_lr"]]
    (root / "RECORDS").write_text("".join(f"{name}\n" for column in listed for name in column))
    summary = {
        "generator": "demo.dataset.generate_demo_dataset",
        "seed": seed,
        "n_records": len(records),
        "n_patients": int(database["patient_id"].nunique()),
        "with_500hz": with_500hz,
        "records_per_class": {cls: sum(cls in c for c in classes) for cls in SUPERCLASSES},
        "multi_label_records": sum(len(c) > 1 for c in classes),
        "records_without_diagnostic_class": sum(not c for c in classes),
        "records_per_fold": {str(f): int(n) for f, n in database["strat_fold"].value_counts().sort_index().items()},
    }
    (root / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_target(out_dir: Path) -> None:
    """Refuse an out_dir that is not a previous demo dataset (or empty): the generator replaces only its own output."""
    if not (out_dir.exists() or out_dir.is_symlink()):
        return
    if not out_dir.is_dir():
        raise ValueError(f"--out_dir {out_dir} is a file, not a folder; choose another --out_dir")
    if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ValueError(
            f"--out_dir {out_dir} is not empty and is not a demo dataset (no {MARKER}), so it is not the generator's "
            "to replace; choose another --out_dir, or empty it yourself"
        )


def generate_demo_dataset(
    out_dir: Path | str,
    n_records: int = 300,
    seed: int = 0,
    with_500hz: bool = False,
    progress: bool = True,
) -> dict:
    """Write a seeded PTB-XL-layout demo dataset (WFDB records, ptbxl_database.csv, scp_statements.csv, labels.csv)."""
    out_dir = Path(os.path.abspath(out_dir))
    if n_records < 1:
        raise ValueError(f"--n_records must be at least 1, got {n_records}")
    _check_target(out_dir)
    with staged_output_dir(out_dir) as staged:
        summary = _write_dataset(staged, n_records, seed, with_500hz, progress)
    return summary | {"out_dir": str(out_dir)}
