"""Turn a labels table (PTB-XL's ptbxl_database.csv or a generic CSV) into one record table.

The record table is a DataFrame with one row per record and the columns
  record      path of the WFDB record relative to the input dir, without extension
  record_id   ecg_id for PTB-XL, the record path for generic CSVs (what meta.json lists)
  patient_id  patient group (a record's own id when the CSV has none)
  fold        integer fold, or missing when the CSV has no folds
  labels      list of class names of the record
Its index is the row's position among the CSV's data rows (0-based), so messages can name the CSV row.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd

PTBXL_TASKS = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")
PTBXL_COLUMNS = ("ecg_id", "patient_id", "scp_codes", "strat_fold", "filename_lr", "filename_hr")
STATEMENT_COLUMNS = ("diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass")
WFDB_EXTENSION = r"\.(hea|dat)$"


def read_csv(path: Path, what: str, **options: object) -> pd.DataFrame:
    """pd.read_csv, failing with one line that names the file when it is absent, not UTF-8, empty or not a CSV."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return pd.read_csv(path, **options)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {exc.start} of the file); save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{what} {path} is empty: it needs a header line and one line per row") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{what} {path} is not a readable CSV: {str(exc).strip()}") from None


def read_csv_checked(path: Path, required: tuple[str, ...], what: str,
                     optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the required (and present optional) columns of a CSV; fail naming the missing ones, or when it has no rows."""
    columns = list(read_csv(path, what, nrows=0).columns)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(
            f"{what} {path} lacks the column(s) {', '.join(missing)}; found: {', '.join(map(str, columns))}"
        )
    table = read_csv(path, what, usecols=[c for c in columns if c in required or c in optional])
    if table.empty:
        raise ValueError(f"{what} {path} has a header but no rows")
    return table


def integer_column(table: pd.DataFrame, column: str, path: Path, allow_missing: bool = False) -> pd.Series:
    """A column as nullable Int64; fail naming the file, line and value when an entry is not a whole number."""
    values = pd.to_numeric(table[column], errors="coerce")
    numbers = values.to_numpy(dtype="float64")
    given = table[column].notna().to_numpy()
    bad = (given & ~(np.isfinite(numbers) & (numbers == np.round(numbers)))) | (~given & (not allow_missing))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        found = repr(str(table[column].iloc[row])) if given[row] else "an empty cell"
        raise ValueError(f"{path} row {row + 1}: column {column} must hold whole numbers, found {found}")
    return values.astype("Int64")


def is_ptbxl_table(path: Path) -> bool:
    """True when the CSV's header looks like PTB-XL's ptbxl_database.csv (it has scp_codes)."""
    return "scp_codes" in read_csv(path, "labels CSV", nrows=0).columns


def parse_scp_codes(text: str) -> dict[str, float]:
    """Parse PTB-XL's Python-literal scp_codes dict safely (never eval)."""
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        codes = None
    if not isinstance(codes, dict):
        raise ValueError(f"scp_codes is not a dict literal: {text!r}")
    return codes


def code_to_classes(statements: pd.DataFrame, task: str) -> dict[str, str]:
    """Map each SCP code that counts for a task to the class name it contributes."""
    if task not in PTBXL_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(PTBXL_TASKS)}")
    if task == "all":
        return {code: code for code in statements.index}
    flag = {"superdiagnostic": "diagnostic", "subdiagnostic": "diagnostic"}.get(task, task)
    chosen = statements[statements[flag] == 1]
    if task == "superdiagnostic":
        return chosen["diagnostic_class"].dropna().to_dict()
    if task == "subdiagnostic":
        return chosen["diagnostic_subclass"].dropna().to_dict()
    return {code: code for code in chosen.index}


def read_database(database_csv: Path) -> pd.DataFrame:
    """PTB-XL's ptbxl_database.csv, checked for the columns the pipeline uses."""
    return read_csv_checked(database_csv, PTBXL_COLUMNS, "PTB-XL database CSV")


def ptbxl_records(database: pd.DataFrame, database_csv: Path, task: str, sampling_rate: int) -> pd.DataFrame:
    """Record table of PTB-XL for a task; filename_lr (100 Hz) or filename_hr (500 Hz).

    Every code in a record's scp_codes counts, whatever its likelihood value (0 included), as in the
    PTB-XL benchmark (Strodthoff et al., 2021).
    """
    statements_csv = database_csv.parent / "scp_statements.csv"
    if not statements_csv.is_file():
        raise FileNotFoundError(
            f"{statements_csv} not found; PTB-XL's scp_statements.csv must sit beside {database_csv.name}"
        )
    statements = read_csv(statements_csv, "PTB-XL statements CSV", index_col=0)
    missing = [c for c in STATEMENT_COLUMNS if c not in statements.columns]
    if missing:
        raise ValueError(f"{statements_csv} lacks the column(s) {', '.join(missing)}")
    mapping = code_to_classes(statements, task)
    labels = []
    for row, text in enumerate(database["scp_codes"], start=1):
        try:
            codes = parse_scp_codes(text)
        except ValueError as exc:
            raise ValueError(f"{database_csv} row {row}: {exc}") from None
        labels.append(sorted({mapping[code] for code in codes if code in mapping}))
    filename = {100: "filename_lr", 500: "filename_hr"}[sampling_rate]
    return pd.DataFrame(
        {
            "record": database[filename].astype(str).str.replace(WFDB_EXTENSION, "", regex=True),
            "record_id": integer_column(database, "ecg_id", database_csv).astype(int),
            "patient_id": database["patient_id"].astype(str),
            "fold": integer_column(database, "strat_fold", database_csv, allow_missing=True),
            "labels": labels,
        }
    )


def generic_records(
    labels_csv: Path,
    record_col: str = "record",
    label_col: str = "labels",
    patient_col: str = "patient_id",
    fold_col: str = "fold",
    separator: str = ";",
) -> pd.DataFrame:
    """Record table of a generic labels CSV: record path, labels joined by `separator`, optional patient and fold."""
    table = read_csv_checked(labels_csv, (record_col, label_col), "labels CSV", (patient_col, fold_col))
    text = table[label_col].astype("string").fillna("")
    labels = [sorted({part.strip() for part in value.split(separator) if part.strip()}) for value in text]
    records = table[record_col].astype(str).str.replace(WFDB_EXTENSION, "", regex=True)
    patients = table[patient_col].astype(str) if patient_col in table.columns else records
    folds = (integer_column(table, fold_col, labels_csv, allow_missing=True) if fold_col in table.columns
             else pd.array([pd.NA] * len(table), "Int64"))
    return pd.DataFrame(
        {"record": records, "record_id": records, "patient_id": patients, "fold": folds, "labels": labels}
    )


def duplicate_records(table: pd.DataFrame, input_dir: Path, id_name: str) -> list[dict]:
    """The rows of a record table that repeat an earlier row's record, by record_id or by the header file they
    resolve to (symlinks followed): {"row", "same_as_row", "why"}, CSV rows counted from 1."""
    first_of_id: dict = {}
    first_of_file: dict[str, tuple[int, str]] = {}
    repeats = []
    for row, record, record_id in zip(table.index, table["record"], table["record_id"]):
        file = os.path.realpath(input_dir / f"{record}.hea")
        if record_id in first_of_id:
            repeats.append({"row": int(row) + 1, "same_as_row": first_of_id[record_id] + 1,
                            "why": f"{id_name} {record_id}"})
        elif file in first_of_file:
            first_row, first_record = first_of_file[file]
            repeats.append({"row": int(row) + 1, "same_as_row": first_row + 1, "why": f"file {first_record}"})
        else:
            first_of_id[record_id] = int(row)
            first_of_file[file] = (int(row), record)
    return repeats
