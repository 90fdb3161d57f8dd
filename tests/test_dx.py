"""common/dx.py: #Dx codes of Challenge-format headers as PTB-XL superclass labels, checked against the labels that
external-dev's labels.csv gives its 184 records, on headers in each dialect, and on bad user maps."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from common.dx import SHIPPED_MAP, SINUS_RHYTHM, SUPERCLASSES, labels_from_codes, load_dx_map, read_dx_codes

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "external-dev"
CLASSES = list(SUPERCLASSES)
HEADER = "A0001 12 500 7500\nA0001.mat 16+24 1000/mV 16 0 28 -1716 0 I\n#Age: 74\n#Sex: Male\n{dx}#Rx: Unknown\n"


@pytest.fixture(scope="module")
def external_rows() -> list[dict[str, str]]:
    """labels.csv of external-dev; missing, it fails the test on CI (CI is set) and skips it elsewhere."""
    labels = EXTERNAL / "labels.csv"
    if not labels.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"external-dev labels not found at {labels}")
        pytest.skip(f"external-dev labels not found at {labels}")
    with open(labels, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("lenient", [False, True])
def test_labels_reproduce_external_dev(external_rows: list[dict[str, str]], lenient: bool) -> None:
    dx_map = load_dx_map(lenient=lenient)
    suffix = "_lenient" if lenient else ""
    compared, wrong = 0, []
    for row in external_rows:
        y, unknown = labels_from_codes(row["dx_codes"].split(","), dx_map, CLASSES)
        assert y is not None and unknown == [], (row["record"], unknown)
        for name, value in zip(CLASSES, y):
            if row[name + suffix] != "":
                compared += 1
                if float(row[name + suffix]) != value:
                    wrong.append((row["record"], row["dx_codes"], name, row[name + suffix], value))
    assert len(external_rows) == 184 and compared == (610 if lenient else 455)
    assert wrong == []


def test_real_headers_give_the_codes_of_labels_csv(external_rows: list[dict[str, str]]) -> None:
    for row in external_rows:
        assert read_dx_codes(EXTERNAL / f"{row['path']}.hea") == row["dx_codes"].split(","), row["record"]


@pytest.mark.parametrize("dx_lines", [
    "#Dx: 59118001,164889003\n",
    "# Dx: 59118001, 164889003  \n",
    "#DX:59118001 ,164889003\t\n",
    "  # dx :  59118001,164889003,\n",
    "#Dx: 59118001\n#Dx: 164889003\n",
])
def test_read_dx_codes_dialects(tmp_path: Path, dx_lines: str) -> None:
    header = tmp_path / "A0001.hea"
    header.write_text(HEADER.format(dx=dx_lines))
    assert read_dx_codes(header) == ["59118001", "164889003"]
    header.write_bytes(HEADER.format(dx=dx_lines).replace("\n", "\r\n").encode())
    assert read_dx_codes(header) == ["59118001", "164889003"]


def test_read_dx_codes_without_codes(tmp_path: Path) -> None:
    header = tmp_path / "A0001.hea"
    header.write_text(HEADER.format(dx="#Dxx: 59118001\n#Hx: Dx: 59118001\n"))
    assert read_dx_codes(header) is None
    header.write_text(HEADER.format(dx="#Dx:  \n"))
    assert read_dx_codes(header) == []


def test_unlabelled_records_give_none_and_name_their_codes() -> None:
    dx_map = load_dx_map()
    assert labels_from_codes([], dx_map, CLASSES) == (None, [])
    assert labels_from_codes(["999999", "Foo"], dx_map, CLASSES) == (None, ["999999", "Foo"])
    y, unknown = labels_from_codes(["999999", "164865005", "59118001"], dx_map, CLASSES)
    assert y.tolist() == [0, 1, 0, 1, 0] and y.dtype == np.float32 and unknown == ["999999"]


def test_sinus_rhythm_is_norm_only_as_the_only_code() -> None:
    dx_map, order = load_dx_map(), ["CD", "HYP", "MI", "NORM", "STTC"]
    assert labels_from_codes([SINUS_RHYTHM], dx_map, order)[0].tolist() == [0, 0, 0, 1, 0]
    assert labels_from_codes([SINUS_RHYTHM, SINUS_RHYTHM], dx_map, order)[0].tolist() == [0, 0, 0, 1, 0]
    assert labels_from_codes([SINUS_RHYTHM, "164889003"], dx_map, order)[0].tolist() == [0, 0, 0, 0, 0]
    assert labels_from_codes([SINUS_RHYTHM, "999999"], dx_map, order)[0].tolist() == [0, 0, 0, 0, 0]
    assert labels_from_codes(["Normal", "164889003"], dx_map, order)[0].tolist() == [0, 0, 0, 1, 0]


def test_lenient_adds_form_statements_only() -> None:
    strict, lenient = load_dx_map(), load_dx_map(lenient=True)
    assert labels_from_codes(["429622005", "164917005"], strict, CLASSES)[0].tolist() == [0, 0, 0, 0, 0]
    assert labels_from_codes(["429622005", "164917005"], lenient, CLASSES)[0].tolist() == [0, 1, 1, 0, 0]
    assert all(name in ("", lenient.superclass[code]) for code, name in strict.superclass.items())
    assert strict.superclass.keys() == lenient.superclass.keys() and strict.path == SHIPPED_MAP


def test_classes_the_map_cannot_label_are_refused() -> None:
    with pytest.raises(ValueError, match=r"dx_map.csv: a dx map for NORM, MI, STTC, CD, HYP cannot label class\(es\) "
                                         r"AF; give a map whose superclass column names them"):
        labels_from_codes(["164889003"], load_dx_map(), ["NORM", "AF"])


def test_user_map_with_its_own_classes(tmp_path: Path) -> None:
    path = tmp_path / "map.csv"
    path.write_text("\ufeff# rhythm only\nnote,superclass, snomed_code\nx,AF,164889003\n,,426783006\n")
    dx_map = load_dx_map(path, classes=["AF"])
    assert dx_map.superclass == {"164889003": "AF", "426783006": ""} and dx_map.classes == ("AF",)
    assert labels_from_codes(["426783006", "164889003"], dx_map, ["AF"])[0].tolist() == [1]


@pytest.mark.parametrize("text, lenient, message", [
    ("snomed_code,class\n1,NORM\n", False, r"map.csv: no column superclass; .* snomed_code,superclass at least"),
    ("# c\ncode,superclass\n1,NORM\n", False, r"map.csv: no column snomed_code; "),
    ("snomed_code,superclass\n1,NORM\n", True, r"map.csv: no column lenient_superclass; .*snomed_code,lenient_super"),
    ("", False, r"map.csv: no column snomed_code or superclass; "),
    ("snomed_code,superclass\n1,NORM\n2,Norm\n", False,
     r"map.csv:3: superclass 'Norm' of code 2 is none of NORM, MI, STTC, CD, HYP; write one of them, or leave it "
     r"empty for a code in no class"),
    ("snomed_code,superclass\n1,NORM\n\n# c\n1,CD\n", False,
     r"map.csv:5: code 1 repeats line 2; keep one row per code"),
    ("snomed_code,superclass\n,NORM\n", False, r"map.csv:2: no snomed_code; fill it in or delete the line"),
])
def test_bad_user_maps_are_refused(tmp_path: Path, text: str, lenient: bool, message: str) -> None:
    path = tmp_path / "map.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as refused:
        load_dx_map(path, lenient=lenient)
    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_missing_map_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nowhere.csv: cannot read the dx map .*No such file.*snomed_code,superclass"):
        load_dx_map(tmp_path / "nowhere.csv")
