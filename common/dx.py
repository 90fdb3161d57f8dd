"""Challenge 2020/21 diagnosis codes (SNOMED CT on a WFDB header's #Dx line) as PTB-XL superclass labels.

Pure functions, so preprocess.py and predict.py can label other hospitals' recordings for a PTB-XL model.
Refusals are ValueError with a one-line message naming the file and the fix; callers turn them into their errors.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
SHIPPED_MAP = Path(__file__).parent / "dx_map.csv"
SINUS_RHYTHM = "426783006"
_DX_LINE = re.compile(r"#\s*dx\s*:(.*)", re.IGNORECASE)


@dataclass(frozen=True)
class DxMap:
    """Code -> superclass ('' for a code the map knows but puts in no class), the classes it may name, its file."""
    superclass: dict[str, str]
    classes: tuple[str, ...]
    path: Path


def read_dx_codes(header: Path) -> list[str] | None:
    """The codes of a header's #Dx line(s) in order, None when it has no such line; any case and spacing of the
    key, spaces around commas and trailing whitespace are accepted, as the Challenge's sources write them."""
    codes, found = [], False
    for line in Path(header).read_text(encoding="utf-8", errors="replace").splitlines():
        match = _DX_LINE.fullmatch(line.strip())
        if match:
            found = True
            codes += [code.strip() for code in match.group(1).split(",") if code.strip()]
    return codes if found else None


def load_dx_map(path: Path | None = None, lenient: bool = False, classes: Sequence[str] = SUPERCLASSES) -> DxMap:
    """The code -> superclass map: the shipped dx_map.csv, or a user's CSV with columns snomed_code,superclass
    (and lenient_superclass when lenient) whose '#' lines are comments. Refused when a column is missing, a class
    is none of classes or a code repeats, so a typo never turns into silently missing labels."""
    path = SHIPPED_MAP if path is None else Path(path)
    column = "lenient_superclass" if lenient else "superclass"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the dx map ({e}); give a UTF-8 CSV with columns "
                         f"snomed_code,{column}") from None
    lines = [(number, next(csv.reader([line]))) for number, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    header = [name.strip() for name in lines[0][1]] if lines else []
    missing = [name for name in ("snomed_code", column) if name not in header]
    if missing:
        raise ValueError(f"{path}: no column {' or '.join(missing)}; a dx map's first line that is not a '#' comment "
                         f"names its columns, snomed_code,{column} at least")
    code_at, class_at = header.index("snomed_code"), header.index(column)
    superclass: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for number, row in lines[1:]:
        code, name = (row[at].strip() if at < len(row) else "" for at in (code_at, class_at))
        if not code:
            raise ValueError(f"{path}:{number}: no snomed_code; fill it in or delete the line")
        if name and name not in classes:
            raise ValueError(f"{path}:{number}: {column} {name!r} of code {code} is none of {', '.join(classes)}; "
                             f"write one of them, or leave it empty for a code in no class")
        if code in line_of:
            raise ValueError(f"{path}:{number}: code {code} repeats line {line_of[code]}; keep one row per code")
        superclass[code], line_of[code] = name, number
    return DxMap(superclass, tuple(classes), path)


def labels_from_codes(codes: list[str], dx_map: DxMap, classes: Sequence[str]) -> tuple[np.ndarray | None, list[str]]:
    """A record's 0/1 vector over classes and the codes dx_map does not know. A class is 1 when any code maps to it;
    sinus rhythm counts only as the record's only code (unknown codes included: see dx_map.csv). None when the map
    knows none of the codes: that record is unlabelled, not negative."""
    foreign = [name for name in classes if name not in dx_map.classes]
    if foreign:
        raise ValueError(f"{dx_map.path}: a dx map for {', '.join(dx_map.classes)} cannot label class(es) "
                         f"{', '.join(foreign)}; give a map whose superclass column names them")
    distinct = list(dict.fromkeys(codes))
    unknown = [code for code in distinct if code not in dx_map.superclass]
    if len(unknown) == len(distinct):
        return None, unknown
    found = {dx_map.superclass[code] for code in distinct
             if code not in unknown and (code != SINUS_RHYTHM or len(distinct) == 1)}
    return np.array([name in found for name in classes], dtype=np.float32), unknown


def challenge_records(input_dir: Path, dx_map: DxMap) -> tuple[pd.DataFrame, dict[str, int]]:
    """Record table (as ptbxl.generic_records gives) of a folder of Challenge-format records, labelled from their
    #Dx lines: every header below input_dir, each record its own patient (the format names none), no folds. A record
    without a known code gets no labels (the caller lists and drops it); returns also how often each unknown code
    occurred."""
    headers = sorted(Path(input_dir).rglob("*.hea"))
    if not headers:
        raise ValueError(f"--input_dir {input_dir} holds no WFDB header (.hea), and no labels CSV was given")
    rows, unknown = [], {}
    for header in headers:
        record = header.relative_to(input_dir).with_suffix("").as_posix()
        codes = read_dx_codes(header) or []
        vector, not_known = labels_from_codes(codes, dx_map, dx_map.classes)
        for code in not_known:
            unknown[code] = unknown.get(code, 0) + 1
        labels = [] if vector is None else [c for c, v in zip(dx_map.classes, vector) if v]
        rows.append({"record": record, "record_id": record, "patient_id": record, "fold": None, "labels": labels})
    return pd.DataFrame(rows), unknown
