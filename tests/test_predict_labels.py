"""predict.py --labels: AUCs and bootstrap intervals on labelled outside recordings (blank = unknown), the classes
not scored and why, the refusals before anything is scored or written, labels from #Dx header lines, and
external-dev's labels.csv naming its own records."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from sklearn.metrics import roc_auc_score

from common.datadir import write_json_atomic
from common.dx import SUPERCLASSES
from common.inference import run_predict
from common.outside_eval import Labels, evaluate, match_inputs, read_label_csv
from common.records import find_records
from common.stats import auc_intervals
from common.train import train
from conftest import TINY_LEADS, tiny_train_config, tiny_write_data_dir
from test_predict import predict_main, read_predictions, refused, tree

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "external-dev"
CLASSES = ["NORM", "MI", "STTC"]
RECORDS = [f"r{i:02d}" for i in range(12)]
DX = {"r00": "426783006", "r01": "426783006", "r02": "164865005", "r03": "164865005,428750005",
      "r04": "428750005", "r05": "59118001", "r06": "426783006,59118001", "r07": "164865005",
      "r08": "999999", "r10": "426783006", "r11": "428750005"}  # r08: no code the map knows; r09: no #Dx line


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3-class multi-label model whose classes are named as PTB-XL superclasses, so the shipped dx map
    labels it; 50 Hz, 12 leads, a 2 s window; trained one epoch."""
    root = tmp_path_factory.mktemp("labels_run")
    data = tiny_write_data_dir(root / "data", sizes=(32, 16, 16))
    meta = json.loads((data / "meta.json").read_text())
    write_json_atomic(data / "meta.json", {**meta, "classes": CLASSES})
    train(tiny_train_config(data, root / "run", epochs=1))
    return root / "run" / "best.pt"


def write_record(folder: Path, name: str, samples: int, seed: int, dx: str | None = None) -> None:
    """A 12-lead 50 Hz WFDB record written by wfdb.wrsamp, with a `#Dx: dx` line appended to its header."""
    signal = np.random.default_rng(seed).normal(scale=0.5, size=(samples, 12))
    wfdb.wrsamp(name, fs=50, units=["mV"] * 12, sig_name=TINY_LEADS, p_signal=signal, fmt=["16"] * 12,
                write_dir=str(folder))
    if dx is not None:
        with open(folder / f"{name}.hea", "a") as f:
            f.write(f"#Dx: {dx}\n")


@pytest.fixture
def recs(tmp_path: Path) -> Path:
    """Twelve usable records r00-r11 (#Dx lines from DX) and `short`, shorter than the model's window."""
    folder = tmp_path / "recs"
    folder.mkdir()
    for i, name in enumerate(RECORDS):
        write_record(folder, name, 300, i, DX.get(name))
    write_record(folder, "short", 60, 99, "426783006")
    return folder


def write_labels(path: Path, rows: dict[str, dict[str, str]], columns: list[str] = CLASSES) -> Path:
    """A labels CSV: a record column, `columns`, and a column of no class; cells as given, blank where absent."""
    lines = ["record," + ",".join(columns) + ",comment"]
    lines += [f"{name}," + ",".join(cells.get(c, "") for c in columns) + ",x" for name, cells in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def auc_over_known(probs: pd.Series, labels: dict[str, str]) -> float:
    """sklearn's ROC AUC over the records whose label is not blank."""
    known = {name: float(value) for name, value in labels.items() if value != ""}
    return roc_auc_score(list(known.values()), probs.loc[list(known)].to_numpy())


def synthetic(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, 3) that follow labels (n, 3) loosely, so the AUCs are neither 0.5 nor 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.4).astype(np.float64)
    return np.clip(0.3 * y + rng.random((n, 3)) * 0.7, 0, 1), y


def test_auc_per_class_over_known_labels_matches_sklearn():
    probs, y = synthetic()
    y[::3, 1] = np.nan           # MI unknown for every third record
    y[:, 2] = np.where(np.arange(60) < 20, 1.0, np.nan)  # STTC: positives only
    names = [f"n{i}" for i in range(60)]
    report = evaluate(Labels("t", CLASSES, names, y), names, probs, CLASSES, [], [])
    known = ~np.isnan(y[:, 1])
    expected = [roc_auc_score(y[:, 0], probs[:, 0]), roc_auc_score(y[known, 1], probs[known, 1])]
    assert report["per_class"]["NORM"]["auc"] == pytest.approx(expected[0], abs=1e-12)
    assert report["per_class"]["MI"]["auc"] == pytest.approx(expected[1], abs=1e-12)
    assert report["per_class"]["MI"]["n_labelled"] == 40 == known.sum()
    assert report["per_class"]["MI"]["positives"] == int(np.nansum(y[:, 1]))
    assert report["per_class"]["STTC"] == {"auc": None, "auc_ci95": None, "positives": 20, "negatives": 0,
                                           "n_labelled": 20}
    assert report["not_scored"] == {"STTC": "one label only"}
    assert report["macro_over"] == ["NORM", "MI"] and report["macro_auc"] == pytest.approx(np.mean(expected))
    for name in ("NORM", "MI"):
        low, high = report["per_class"][name]["auc_ci95"]
        assert low < report["per_class"][name]["auc"] < high
    low, high = report["macro_auc_ci95"]
    assert low < report["macro_auc"] < high


def test_fully_labelled_intervals_are_the_training_reports():
    probs, y = synthetic(seed=1)
    names = [f"n{i}" for i in range(60)]
    report = evaluate(Labels("t", CLASSES, names, y), names, probs, CLASSES, [], [])
    training = auc_intervals(probs, y, CLASSES)  # what common.metrics.summarise reports for test
    assert report["macro_auc_ci95"] == pytest.approx(training["macro_auc"], abs=1e-12)
    for name in CLASSES:
        assert report["per_class"][name]["auc_ci95"] == pytest.approx(training["per_class_auc"][name], abs=1e-12)
    assert report["auc_ci95_bootstrap"] == {"resamples": training["resamples"], "seed": training["seed"],
                                            "level": 0.95}


def test_a_class_the_labels_do_not_name_is_not_scored_for_no_labels():
    probs, y = synthetic()
    names = [f"n{i}" for i in range(60)]
    y[:, 1] = np.nan
    report = evaluate(Labels("t", ["NORM", "MI"], names, y[:, :2]), names, probs, CLASSES, [], [])
    assert report["not_scored"] == {"MI": "no labels", "STTC": "no labels"}
    assert report["macro_over"] == ["NORM"] and report["macro_auc"] == report["per_class"]["NORM"]["auc"]


def test_predict_with_a_labels_csv(ckpt, recs, tmp_path, monkeypatch, capsys):
    cells = {name: {"NORM": str(i % 2), "MI": "" if i % 3 == 0 else str(int(i % 4 < 2)), "STTC": "1"}
             for i, name in enumerate(RECORDS)}
    labels = write_labels(tmp_path / "labels.csv", {**cells, "short": {"NORM": "1"}, "ghost": {"NORM": "0"}})
    out = tmp_path / "out" / "p.csv"
    assert run_predict([ckpt], recs, out, labels=str(labels)) == 1  # 1: `short` is skipped
    report = json.loads((tmp_path / "out" / "p.metrics.json").read_text())
    probs = read_predictions(out)
    for name in ("NORM", "MI"):
        column = {record: row[name] for record, row in cells.items()}
        assert report["per_class"][name]["auc"] == pytest.approx(auc_over_known(probs[name], column), abs=1e-9)
    assert report["per_class"]["MI"]["n_labelled"] == 8
    assert report["not_scored"] == {"STTC": "one label only"}
    assert report["records"] == {"labelled": 12, "predicted": 12, "skipped": 1, "labelled_skipped": 1,
                                 "labels_not_found": 1, "unlabelled": 0}
    assert report["labels_not_found_examples"] == ["ghost"]
    table = capsys.readouterr().out
    assert "\nMI " in table and "(one label only)" in table and f"{report['macro_auc']:.3f}" in table


def test_labels_from_dx_header_lines(ckpt, recs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "p.csv"
    code, error = predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--input", recs, "--labels", "dx", "--out", out)
    assert (code, error) == (1, "")
    report = json.loads((tmp_path / "p.metrics.json").read_text())
    assert report["unlabelled_records"] == ["r08", "r09"] and report["records"]["labelled"] == 10
    probs = read_predictions(out)
    expected = {  # the sinus rule: 426783006 is NORM only as a record's only code
        "NORM": {n: str(int(DX[n] == "426783006")) for n in DX if n != "r08"},
        "MI": {n: str(int("164865005" in DX[n])) for n in DX if n != "r08"},
        "STTC": {n: str(int("428750005" in DX[n])) for n in DX if n != "r08"},
    }
    for name, column in expected.items():
        assert report["per_class"][name]["auc"] == pytest.approx(auc_over_known(probs[name], column), abs=1e-9)
        assert report["per_class"][name]["positives"] == sum(v == "1" for v in column.values())

    user_map = tmp_path / "map.csv"
    user_map.write_text("# codes of this test\nsnomed_code,superclass\n59118001,MI\n426783006,\n")
    code, _ = predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--input", recs, "--labels", "dx", "--dx_map",
                           user_map, "--out", tmp_path / "u.csv")
    report = json.loads((tmp_path / "u.metrics.json").read_text())
    assert report["per_class"]["MI"]["positives"] == 2  # r05, r06: RBBB, MI by this map
    assert report["records"]["labelled"] == 5 and report["not_scored"] == {"NORM": "one label only",
                                                                           "STTC": "one label only"}


@pytest.mark.parametrize("case, message", [
    ("missing", "--labels {root}/nothing.csv not found"),
    ("folder", "--labels {root}/recs cannot be read"),
    ("no_record", "has no 'record' column (columns: name, NORM, MI"),
    ("bad_cell", "line 3 (record r01): column MI holds 'yes'; a label is 1, 0, or blank"),
    ("no_class", "has no column named as a class of the model (NORM, MI, STTC); its columns are record, AF"),
    ("repeat", "line 3: record r00 repeats line 2"),
    ("none_found", "none of the 2 records of --labels {root}/labels.csv is among the --input records (e.g. a.hea;"),
    ("export", "--labels scores the predictions of --input records; use it with --input, not --export"),
    ("dx_map_alone", "--dx_map maps the #Dx codes of --labels dx"),
    ("dx_array", "--labels dx reads the #Dx line of WFDB headers, and --input records such as x.npy:0 are rows"),
    ("dx_unknown", "none of the 1 --input records has a #Dx code that the shipped map dx_map.csv knows (e.g. "
                   "{root}/recs/r08)"),
    ("foreign_metrics", "--out metrics file {root}/p.metrics.json exists and is not an earlier metrics file"),
    ("out_is_labels", "--out {root}/labels.csv is --labels {root}/labels.csv"),
])
def test_bad_labels_are_refused_before_anything_is_written(ckpt, recs, tmp_path, monkeypatch, capsys, case, message):
    root = tmp_path
    good = write_labels(root / "labels.csv", {"r00": {"NORM": "1"}, "r01": {"NORM": "0"}})
    task = ["--input", recs, "--labels", good]
    if case == "missing":
        task[-1] = root / "nothing.csv"
    elif case == "folder":
        task[-1] = recs
    elif case == "no_record":
        (root / "labels.csv").write_text("name,NORM,MI\nr00,1,0\n")
    elif case == "bad_cell":
        write_labels(good, {"r00": {"MI": "1"}, "r01": {"MI": "yes"}})
    elif case == "no_class":
        (root / "labels.csv").write_text("record,AF\nr00,1\n")
    elif case == "repeat":
        (root / "labels.csv").write_text("record,NORM\nr00,1\nr00,0\n")
    elif case == "none_found":
        write_labels(good, {"a.hea": {"NORM": "1"}, "b": {"NORM": "0"}})
    elif case == "export":
        task = ["--export", root / "m.onnx", "--labels", good]
    elif case == "dx_map_alone":
        task += ["--dx_map", good]
    elif case == "dx_array":
        np.save(root / "x.npy", np.zeros((2, 12, 300), np.float32))
        task = ["--input", root / "x.npy", "--fs", 50, "--leads", ",".join(TINY_LEADS), "--labels", "dx"]
    elif case == "dx_unknown":
        task = ["--input", recs / "r08.hea", "--labels", "dx"]
    elif case == "foreign_metrics":
        (root / "p.metrics.json").write_text('{"mine": true}\n')
    elif case == "out_is_labels":
        task += ["--out", good]
    out = [] if "--out" in task or case == "export" else ["--out", root / "p.csv"]
    error = refused(monkeypatch, capsys, root, "--ckpt", ckpt, *task, *out)
    assert message.format(root=root) in error


def test_some_labelled_records_missing_warn_and_score_the_rest(ckpt, recs, tmp_path, monkeypatch, capsys, caplog):
    labels = write_labels(tmp_path / "labels.csv", {"r00": {"NORM": "1"}, "r01": {"NORM": "0"},
                                                    "gone1": {"NORM": "1"}, "gone2": {"NORM": "0"}})
    code, _ = predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--input", recs, "--labels", labels, "--out",
                           tmp_path / "p.csv")
    assert code == 1
    assert "2 of 4 records of --labels" in caplog.text and "e.g. gone1; the metrics are over those present" \
        in caplog.text
    report = json.loads((tmp_path / "p.metrics.json").read_text())
    assert report["records"]["labels_not_found"] == 2 and report["per_class"]["NORM"]["n_labelled"] == 2


def test_a_failed_metrics_write_leaves_the_previous_outputs(ckpt, recs, tmp_path, monkeypatch, capsys):
    labels = write_labels(tmp_path / "labels.csv", {"r00": {"NORM": "1"}, "r01": {"NORM": "0"},
                                                    str(recs / "r02"): {"NORM": "1"}})
    out = ["--out", tmp_path / "out" / "p.csv"]
    assert predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--input", recs, "--labels", labels, *out)[0] == 1
    before = tree(tmp_path)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(json, "dump", full_disk)  # the metrics file is the one JSON predict writes
    code, error = predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--input", recs / "r02.hea", "--labels", labels,
                               *out)  # other predictions: one record, named by its path
    assert code == 2 and "No space left on device" in error
    assert tree(tmp_path) == before


def test_external_dev_labels_name_its_records():
    labels_csv = EXTERNAL / "labels.csv"
    if not labels_csv.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"external-dev not found at {EXTERNAL}")
        pytest.skip(f"external-dev not found at {EXTERNAL}")
    labels = read_label_csv(labels_csv, list(SUPERCLASSES))
    names = [record.name for record in find_records(EXTERNAL / "records", 100.0)]
    assert len(labels.names) == 184 and match_inputs(labels, names) == [] and set(labels.names) == set(names)
    known = dict(zip(labels.classes, (~np.isnan(labels.values)).sum(axis=0)))
    assert known == {"NORM": 184, "MI": 29, "STTC": 29, "CD": 184, "HYP": 29}  # CPSC2018 cannot say MI, STTC, HYP
    assert labels.values[labels.names.index("A0001")].tolist() == pytest.approx([0, np.nan, np.nan, 1, np.nan],
                                                                                nan_ok=True)
