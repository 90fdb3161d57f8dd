"""predict.py: raw recordings give the training code's own probabilities, bad records are skipped with their reason
while the others are predicted, exit codes, ensembles, thresholds, old checkpoints, and the ONNX export."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from common import signals
from common.checkpoint import CheckpointError, load_model
from common.cli import run_cli
from common.datadir import load_meta
from common.evaluate import predict
from common.inference import run_predict
from common.preprocess import PreprocessConfig, preprocess
from common.train import train
from conftest import TINY_LEADS, run_repo_script, tiny_train_config, tiny_write_data_dir
from demo.dataset import write_wfdb
from test_signals import LEADS, ecg, write_challenge_record

TOL = 1e-5


def own_probs(ckpt: Path, X: np.ndarray) -> np.ndarray:
    """The training code's probabilities: common.evaluate.predict with the checkpoint, as for val and test."""
    model, meta = load_model(ckpt)
    return predict(model, X, meta["normalisation"], meta["multilabel"], meta["input_shape"]["window"])


def read_predictions(path: Path) -> pd.DataFrame:
    """predictions CSV indexed by record (names kept as text, an empty label set kept as '')."""
    return pd.read_csv(path, dtype={"record": str, "labels": str}, keep_default_na=False).set_index("record")


def tuned_thresholds(ckpt: Path) -> np.ndarray:
    """The validation-tuned thresholds in the run's metrics.json."""
    return np.array(json.loads((ckpt.parent / "metrics.json").read_text())["val"]["thresholds"])


def labels_at(probs: np.ndarray, classes: list[str], cut: np.ndarray) -> list[str]:
    """';'-joined classes at or above their threshold."""
    return [";".join(c for c, hit in zip(classes, row) if hit) for row in probs >= cut]


@pytest.fixture(scope="module")
def runs(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data dirs of the real sample (100 Hz unfiltered, --bandpass off, so its arrays are what predict.py is given
    as input; and its 500 Hz records resampled to 100 Hz and band-passed by preprocess.py) and tiny models trained
    on them: a and b (two seeds) on the first, band on the second."""
    root = tmp_path_factory.mktemp("predict")
    data = root / "data100"
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=data, val_folds=[8], test_folds=[9], bandpass="off",
                                workers=1), "t")
    table = pd.read_csv(sample_dir / "ptbxl_database.csv")
    table[[(sample_dir / f"{name}.hea").is_file() for name in table["filename_hr"]]].to_csv(root / "hr.csv", index=False)
    shutil.copy(sample_dir / "scp_statements.csv", root / "scp_statements.csv")
    data500 = root / "data500"
    preprocess(PreprocessConfig(input_dir=sample_dir, meta_csv=root / "hr.csv", out_dir=data500, sampling_rate=500,
                                fs=100, bandpass=(0.5, 40.0), split="random", val_frac=0.2, test_frac=0.3,
                                workers=1), "t")
    for name, data_dir, seed in (("a", data, 0), ("b", data, 1), ("band", data500, 0)):
        train(tiny_train_config(data_dir, root / name, epochs=2, seed=seed))
    return {"root": root, "data": data, "data500": data500,
            **{name: root / name / "best.pt" for name in ("a", "b", "band")}}


@pytest.mark.slow
def test_raw_100hz_records_give_the_training_codes_test_probabilities(runs, sample_dir, tmp_path):
    out = tmp_path / "p.csv"
    result = run_repo_script("predict.py", "--ckpt", runs["a"], "--input", sample_dir, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "tuned on validation" in result.stderr
    meta = load_meta(runs["data"])
    rows = read_predictions(out).loc[[str(i) for i in meta["splits"]["test"]["record_ids"]]]
    classes = meta["classes"]
    expected = own_probs(runs["a"], np.load(runs["data"] / "X_test.npy"))
    np.testing.assert_allclose(rows[classes].to_numpy(), expected, atol=TOL)
    assert rows["labels"].tolist() == labels_at(rows[classes].to_numpy(), classes, tuned_thresholds(runs["a"]))
    assert len(read_predictions(out)) == 422 and pd.read_csv(tmp_path / "p.skipped.csv").empty


@pytest.mark.slow
def test_raw_500hz_records_to_a_100hz_model_resampled_and_filtered_as_in_preprocessing(runs, sample_dir, tmp_path):
    out = tmp_path / "p.csv"
    result = run_repo_script("predict.py", "--ckpt", runs["band"], "--input", sample_dir / "records500", "--out", out)
    assert result.returncode == 0, result.stderr
    table = read_predictions(out)
    assert len(table) == 100 and table.index[0] == "00000/00001_hr"
    table.index = [int(Path(name).name.split("_")[0]) for name in table.index]
    meta = load_meta(runs["data500"])
    assert meta["signal"]["bandpass_hz"] == [0.5, 40.0] and meta["signal"]["records_hz"] == 500
    got = table.loc[meta["splits"]["test"]["record_ids"], meta["classes"]].to_numpy()
    np.testing.assert_allclose(got, own_probs(runs["band"], np.load(runs["data500"] / "X_test.npy")), atol=TOL)


def copy_record(sample_dir: Path, ecg_id: int, dest: Path) -> Path:
    """Copy a 100 Hz sample record into dest; returns the record path without extension."""
    dest.mkdir(parents=True)
    for ext in (".hea", ".dat"):
        shutil.copy(sample_dir / f"records100/00000/{ecg_id:05d}_lr{ext}", dest / f"{ecg_id:05d}_lr{ext}")
    return dest / f"{ecg_id:05d}_lr"


def edit_header(record: Path, pattern: str, replacement: str) -> None:
    """Rewrite a record's header with one regular-expression substitution."""
    hea = record.with_name(record.name + ".hea")
    hea.write_text(re.sub(pattern, replacement, hea.read_text(), count=1, flags=re.M))


@pytest.mark.slow
def test_bad_records_are_skipped_with_their_reason_and_the_others_predicted(runs, sample_dir, tmp_path):
    folder = tmp_path / "in"
    copy_record(sample_dir, 1, folder / "good")
    signal, _ = signals.read_record(copy_record(sample_dir, 6, tmp_path / "src"))
    write_wfdb(folder / "long" / "rec1500", np.concatenate([signal, signal[:, :500]], axis=1).T, 100)
    write_wfdb(folder / "short" / "rec150", signal[:, :150].T, 100)
    edit_header(copy_record(sample_dir, 2, folder / "noleads"), r" V6$", " X")
    truncated = copy_record(sample_dir, 3, folder / "truncated").with_suffix(".dat")
    truncated.write_bytes(truncated.read_bytes()[:10000])
    (folder / "garbage").mkdir()
    (folder / "garbage" / "bad.hea").write_text("not a header\n")
    nan = copy_record(sample_dir, 4, folder / "nan").with_suffix(".dat")
    nan.write_bytes(b"\x00\x80" + nan.read_bytes()[2:])  # -32768: WFDB's invalid sample
    edit_header(copy_record(sample_dir, 5, folder / "rate"), r"^(00005_lr 12) 100", r"\1 257.3")

    out = tmp_path / "out" / "p.csv"
    result = run_repo_script("predict.py", "--ckpt", runs["a"], "--input", folder, "--out", out)
    assert result.returncode == 1, result.stderr
    table = read_predictions(out)
    assert table.index.tolist() == ["good/00001_lr", "long/rec1500"]
    classes = load_meta(runs["data"])["classes"]
    long_signal, _ = signals.read_record(folder / "long" / "rec1500")
    np.testing.assert_allclose(table.loc[["long/rec1500"], classes].to_numpy(),
                               own_probs(runs["a"], long_signal[None].astype(np.float32)), atol=TOL)
    reasons = pd.read_csv(tmp_path / "out" / "p.skipped.csv").set_index("record")["reason"].to_dict()
    assert "missing ['V6']" in reasons["noleads/00002_lr"]
    assert "header expects" in reasons["truncated/00003_lr"]
    assert "malformed" in reasons["garbage/bad"]
    assert "NaN or Inf" in reasons["nan/00004_lr"]
    assert "257.3 Hz, which cannot be resampled exactly to the model's 100 Hz" in reasons["rate/00005_lr"]
    assert "has 150 samples" in reasons["short/rec150"] and "window of 200 samples" in reasons["short/rec150"]
    assert len(reasons) == 6 and all("\n" not in reason for reason in reasons.values())
    assert "6 of 8 records skipped" in result.stderr

    alone = run_repo_script("predict.py", "--ckpt", runs["a"], "--input", folder / "garbage" / "bad.hea",
                            "--out", tmp_path / "none.csv")
    assert alone.returncode == 2 and "none of the 1 records could be predicted" in alone.stderr


@pytest.mark.slow
def test_bad_usage_and_foreign_checkpoints_exit_2_with_one_line(runs, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x02garbage")
    result = run_repo_script("predict.py", "--ckpt", junk, "--input", tmp_path)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "not a readable checkpoint" in result.stderr or "not a usable checkpoint" in result.stderr
    with pytest.raises(ValueError, match="no WFDB record"):
        run_predict([runs["a"]], tmp_path, tmp_path / "p.csv")
    np.save(tmp_path / "x.npy", np.zeros((2, 12, 300), np.float32))
    with pytest.raises(ValueError, match="pass its sampling rate --fs"):
        run_predict([runs["a"]], tmp_path / "x.npy", tmp_path / "p.csv")


def test_array_input_matches_leads_by_name_in_any_order_and_case(runs, tmp_path):
    X = np.load(runs["data"] / "X_test.npy")
    order = np.random.default_rng(0).permutation(12)
    np.save(tmp_path / "x.npy", X[:, order])
    leads = [TINY_LEADS[i].replace("AV", "aV") for i in order]
    assert run_predict([runs["a"]], tmp_path / "x.npy", tmp_path / "p.csv", fs=100, leads=leads) == 0
    table = read_predictions(tmp_path / "p.csv")
    assert table.index[0] == "x.npy:0"
    np.testing.assert_allclose(table.iloc[:, :-1].to_numpy(), own_probs(runs["a"], X), atol=TOL)

    np.save(tmp_path / "eleven.npy", X[:, :11])
    assert run_predict([runs["a"]], tmp_path / "eleven.npy", tmp_path / "e.csv", fs=100, leads=TINY_LEADS[:11]) == 2
    assert "missing ['V6']" in pd.read_csv(tmp_path / "e.skipped.csv")["reason"][0]


def test_one_recording_in_uv_mv_and_v_and_as_adc_counts_gets_the_same_probabilities(runs, tmp_path):
    mv = ecg(5000, 500)
    for units in ("uV", "mV", "V"):
        write_challenge_record(tmp_path / "in" / units, "A1", mv, 500, units)
    assert run_predict([runs["a"]], tmp_path / "in", tmp_path / "p.csv") == 0
    table = read_predictions(tmp_path / "p.csv")
    probs = table.loc[["mV/A1", "uV/A1", "V/A1"]].iloc[:, :-1].to_numpy()
    np.testing.assert_allclose(probs[1:], probs[[0, 0]], atol=1e-4)
    counts = np.round(mv.T[None] * 1000).astype(np.int16)  # 1 uV per ADC unit: 1000 per mV
    np.save(tmp_path / "counts.npy", counts)
    with pytest.raises(ValueError, match="holds int16 values, raw ADC counts rather than mV: pass --adc_gain"):
        run_predict([runs["a"]], tmp_path / "counts.npy", tmp_path / "c.csv", fs=500, leads=LEADS)
    assert run_predict([runs["a"]], tmp_path / "counts.npy", tmp_path / "c.csv", fs=500, leads=LEADS,
                       adc_gain=1000) == 0
    np.testing.assert_allclose(read_predictions(tmp_path / "c.csv").iloc[:, :-1].to_numpy(), probs[:1], atol=1e-4)


def test_ensemble_is_the_mean_of_its_members_and_mismatches_are_refused(runs, tmp_path):
    X = np.load(runs["data"] / "X_test.npy")
    np.save(tmp_path / "x.npy", X)
    assert run_predict([runs["a"], runs["b"]], tmp_path / "x.npy", tmp_path / "p.csv", 100, TINY_LEADS) == 0
    got = read_predictions(tmp_path / "p.csv").iloc[:, :-1].to_numpy()
    np.testing.assert_allclose(got, (own_probs(runs["a"], X) + own_probs(runs["b"], X)) / 2, atol=TOL)
    with pytest.raises(CheckpointError, match=r"cannot be averaged .*bandpass_hz None vs \[0.5, 40.0\]"):
        run_predict([runs["a"], runs["band"]], tmp_path / "x.npy", tmp_path / "q.csv", 100, TINY_LEADS)


def test_thresholds_from_metrics_json_else_half_with_a_warning(runs, tmp_path, caplog):
    X = np.load(runs["data"] / "X_test.npy")
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "alone").mkdir()
    shutil.copy(runs["a"], tmp_path / "alone" / "best.pt")
    caplog.set_level(logging.INFO, logger="predict")
    assert run_predict([tmp_path / "alone" / "best.pt"], tmp_path / "x.npy", tmp_path / "p.csv", 100, TINY_LEADS) == 0
    assert "metrics.json not found: every class is decided at 0.5" in caplog.text
    table = read_predictions(tmp_path / "p.csv")
    classes = load_meta(runs["data"])["classes"]
    assert table["labels"].tolist() == labels_at(table[classes].to_numpy(), classes, np.full(len(classes), 0.5))


def test_checkpoint_without_signal_entry_falls_back_to_its_data_dir_or_is_refused(runs, tmp_path):
    ckpt = torch.load(runs["a"], weights_only=True)
    del ckpt["signal"]
    ckpt["data_dir"] = str(runs["data"])  # as such checkpoints stored it: the --data_dir typed
    torch.save(ckpt, tmp_path / "old.pt")
    X = np.load(runs["data"] / "X_test.npy")
    np.save(tmp_path / "x.npy", X)
    assert run_predict([tmp_path / "old.pt"], tmp_path / "x.npy", tmp_path / "p.csv", 100, TINY_LEADS) == 0
    np.testing.assert_allclose(read_predictions(tmp_path / "p.csv").iloc[:, :-1].to_numpy(), own_probs(runs["a"], X),
                               atol=TOL)
    ckpt["data_dir"] = str(tmp_path / "gone")
    torch.save(ckpt, tmp_path / "orphan.pt")
    with pytest.raises(CheckpointError, match="predates checkpoints that record their leads"):
        run_predict([tmp_path / "orphan.pt"], tmp_path / "x.npy", tmp_path / "q.csv", 100, TINY_LEADS)


def test_single_label_model_labels_by_argmax(tmp_path):
    data = tiny_write_data_dir(tmp_path / "single", multilabel=False)
    train(tiny_train_config(data, tmp_path / "run", epochs=2))
    ckpt = tmp_path / "run" / "best.pt"
    assert run_predict([ckpt], data / "X_test.npy", tmp_path / "p.csv", 50, TINY_LEADS) == 0
    table = read_predictions(tmp_path / "p.csv")
    probs = table[["C0", "C1", "C2"]].to_numpy()
    np.testing.assert_allclose(probs, own_probs(ckpt, np.load(data / "X_test.npy")), atol=TOL)
    assert table["labels"].tolist() == [f"C{k}" for k in probs.argmax(axis=1)]


@pytest.mark.slow
def test_onnx_export_matches_pytorch_and_its_sidecar_scores_whole_records(runs, tmp_path):
    pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install -r requirements-export.txt)")
    ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime (requirements-export.txt)")
    from common.augment import normalise

    result = run_repo_script("predict.py", "--ckpt", runs["a"], "--export", tmp_path / "model.onnx")
    assert result.returncode == 0, result.stderr
    side = json.loads((tmp_path / "model.json").read_text())
    model, ckpt = load_model(runs["a"])
    assert side["classes"] == ckpt["classes"] and side["sampling_rate_hz"] == 100 and side["window"] == 200
    assert side["stride"] == 100 and side["aggregation"] == "mean_logit" and side["leads"] == TINY_LEADS
    assert side["thresholds"] == tuned_thresholds(runs["a"]).tolist() and side["onnx"]["check"]["checked"]
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        windows = np.random.default_rng(batch).normal(size=(batch, 12, 200)).astype(np.float32)
        with torch.inference_mode():
            expected = model(normalise(torch.from_numpy(windows), ckpt["normalisation"])).numpy()
        logits, probabilities = session.run(["logits", "probabilities"], {"windows": windows})
        np.testing.assert_allclose(logits, expected, atol=1e-4)
        np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-expected)), atol=1e-4)

    X = np.load(runs["data"] / "X_test.npy")[:4]
    starts = list(range(0, X.shape[-1] - side["window"] + 1, side["stride"]))
    windows = np.stack([x[:, s:s + side["window"]] for x in X for s in starts])
    logits = session.run(["logits"], {"windows": windows})[0].reshape(len(X), len(starts), -1)
    probs = 1 / (1 + np.exp(-logits.mean(axis=1)))
    np.testing.assert_allclose(probs, own_probs(runs["a"], X), atol=1e-4)

    ensemble = run_repo_script("predict.py", "--ckpt", runs["a"], "--ckpt", runs["b"], "--export", tmp_path / "e.onnx")
    assert ensemble.returncode == 2 and "--export takes one checkpoint file" in ensemble.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multi-label run dir (best.pt, metrics.json with tuned thresholds), trained for one epoch."""
    root = tmp_path_factory.mktemp("tiny_run")
    train(tiny_train_config(tiny_write_data_dir(root / "data", sizes=(32, 16, 16)), root / "run", epochs=1))
    return root / "run"


@pytest.fixture
def inputs(tiny_run: Path, sample_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Everything predict.py reads, under tmp_path: a run dir, an .npy array, a folder of WFDB records and a
    two-record PTB-XL folder."""
    (tmp_path / "run").mkdir()
    for name in ("best.pt", "metrics.json"):
        shutil.copy(tiny_run / name, tmp_path / "run" / name)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(3, 12, 200)).astype(np.float32))
    write_wfdb(tmp_path / "recs" / "r1", np.random.default_rng(1).normal(size=(300, 12)), 50)
    ptbxl = tmp_path / "ptbxl"
    ptbxl.mkdir()
    table = pd.read_csv(sample_dir / "ptbxl_database.csv").head(2)
    table.to_csv(ptbxl / "ptbxl_database.csv", index=False)
    for name in table["filename_lr"]:
        (ptbxl / name).parent.mkdir(parents=True, exist_ok=True)
        for ext in (".hea", ".dat"):
            shutil.copy(sample_dir / f"{name}{ext}", ptbxl / f"{name}{ext}")
    return {"root": tmp_path, "ckpt": tmp_path / "run" / "best.pt", "metrics": tmp_path / "run" / "metrics.json",
            "npy": tmp_path / "x.npy", "recs": tmp_path / "recs", "ptbxl": ptbxl}


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under root, hidden ones included: what a refused command must
    leave exactly as it was."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def predict_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    """predict.py run in this process with `args` as its command line runs it (common.cli.run_cli): its exit code and
    its error lines on stderr."""
    import predict as script

    monkeypatch.setattr(sys, "argv", ["predict.py", *map(str, args)])
    capsys.readouterr()
    code = run_cli(script.main, script.BAD_INPUT)
    return code, "\n".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("error: "))


def refused(monkeypatch, capsys, root: Path, *args: object) -> str:
    """The one error line of a predict.py call that must exit 2 and leave everything under root as it was."""
    before = tree(root)
    code, error = predict_main(monkeypatch, capsys, *args)
    assert code == 2 and error.count("\n") == 0, error
    assert tree(root) == before
    return error


@pytest.mark.parametrize("target, collides_with", [
    ("{ckpt}", "--ckpt {ckpt}"),
    ("{npy}", "--input {npy}"),
    ("{recs}/r1.hea", "--input record file {recs}/r1.hea"),
    ("{recs}/r1.dat", "--input record file {recs}/r1.dat"),
])
def test_out_that_is_an_input_is_refused(inputs, monkeypatch, capsys, target, collides_with):
    source = inputs["npy"] if target == "{npy}" else inputs["recs"]
    leads = ["--fs", 50, "--leads", ",".join(TINY_LEADS)] if source == inputs["npy"] else []
    out = target.format(**inputs)
    error = refused(monkeypatch, capsys, inputs["root"], "--ckpt", inputs["ckpt"], "--input", source, *leads,
                    "--out", out)
    assert f"--out {out} is {collides_with.format(**inputs)}" in error


def test_out_that_is_the_ptbxl_database_is_refused(inputs, monkeypatch, capsys):
    database = inputs["ptbxl"] / "ptbxl_database.csv"
    error = refused(monkeypatch, capsys, inputs["root"], "--ckpt", inputs["ckpt"], "--input", inputs["ptbxl"],
                    "--out", database)
    assert f"--out {database} is --input file {database}" in error


def test_export_names_that_collide_are_refused(inputs, monkeypatch, capsys):
    root, ckpt, metrics = inputs["root"], inputs["ckpt"], inputs["metrics"]
    error = refused(monkeypatch, capsys, root, "--ckpt", ckpt, "--export", root / "model.json")
    assert f"--export sidecar {root / 'model.json'} is --export {root / 'model.json'}" in error
    error = refused(monkeypatch, capsys, root, "--ckpt", ckpt, "--export", ckpt)
    assert f"--export {ckpt} is --ckpt {ckpt}" in error
    error = refused(monkeypatch, capsys, root, "--ckpt", ckpt, "--export", metrics.with_suffix(".onnx"))
    assert f"--export sidecar {metrics} is the thresholds file {metrics}" in error


def test_export_never_replaces_a_file_it_did_not_write(inputs, monkeypatch, capsys):
    pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install -r requirements-export.txt)")
    root, ckpt = inputs["root"], inputs["ckpt"]
    (root / "data").mkdir()
    (root / "data" / "meta.json").write_text('{"classes": []}\n')
    error = refused(monkeypatch, capsys, root, "--ckpt", ckpt, "--export", root / "data" / "meta.onnx")
    assert f"--export sidecar {root / 'data' / 'meta.json'} exists and is not" in error
    np.save(root / "data" / "X.npy", np.zeros(3))
    error = refused(monkeypatch, capsys, root, "--ckpt", ckpt, "--export", root / "data" / "X.npy")
    assert f"--export {root / 'data' / 'X.npy'} exists and is not" in error
    assert predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--export", root / "m.onnx") == (0, "")
    first = tree(root)
    assert predict_main(monkeypatch, capsys, "--ckpt", ckpt, "--export", root / "m.onnx") == (0, "")  # its own: again
    assert tree(root).keys() == first.keys()


def test_failed_export_check_leaves_no_file(inputs, monkeypatch, capsys):
    pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime (requirements-export.txt)")
    import common.export

    monkeypatch.setattr(common.export, "TOLERANCE", -1.0)
    root = inputs["root"]
    error = refused(monkeypatch, capsys, root, "--ckpt", inputs["ckpt"], "--export", root / "new" / "m.onnx")
    assert "onnxruntime differs from PyTorch" in error


@pytest.mark.parametrize("flag", ["--out", "--export"])
def test_unusable_output_paths_are_refused_up_front_with_flag_path_and_reason(inputs, monkeypatch, capsys, flag):
    root = inputs["root"]
    task = ["--input", inputs["recs"]] if flag == "--out" else []
    args = ["--ckpt", inputs["ckpt"], *task]
    (root / "folder.csv").mkdir()
    error = refused(monkeypatch, capsys, root, *args, flag, root / "folder.csv")
    assert f"{flag} {root / 'folder.csv'} is a folder, not a file" in error
    (root / "afile").write_text("not a folder\n")
    error = refused(monkeypatch, capsys, root, *args, flag, root / "afile" / "sub" / "p.csv")
    assert f"{flag} {root / 'afile' / 'sub' / 'p.csv'} runs through {root / 'afile'}, which is not a folder" in error

    real_open = os.open

    def read_only(path, flags, *rest, **kwargs):
        if Path(path).parent == root / "ro" or Path(path) == root / "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *rest, **kwargs)

    (root / "ro").mkdir()
    monkeypatch.setattr(os, "open", read_only)
    error = refused(monkeypatch, capsys, root, *args, flag, root / "ro" / "p.csv")
    assert f"{flag} {root / 'ro' / 'p.csv'} cannot be written: Read-only file system ({root / 'ro'})" in error
    assert ".tmp" not in error


def test_skipped_list_is_checked_before_anything_is_written(inputs, monkeypatch, capsys):
    root, out = inputs["root"], inputs["root"] / "p.csv"
    args = ["--ckpt", inputs["ckpt"], "--input", inputs["recs"], "--out", out]
    (root / "p.skipped.csv").mkdir()
    error = refused(monkeypatch, capsys, root, *args)
    assert f"--out skipped list {root / 'p.skipped.csv'} is a folder, not a file" in error
    (root / "p.skipped.csv").rmdir()
    (root / "p.skipped.csv").write_text("my notes\n")
    error = refused(monkeypatch, capsys, root, *args)
    assert f"--out skipped list {root / 'p.skipped.csv'} exists and is not" in error


def test_a_failed_write_leaves_the_previous_predictions_and_no_temp_file(inputs, monkeypatch, capsys):
    root, out = inputs["root"], inputs["root"] / "p.csv"
    args = ["--ckpt", inputs["ckpt"], "--input", inputs["recs"], "--out", out]
    assert predict_main(monkeypatch, capsys, *args) == (0, "")
    before = tree(root)
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "p.skipped.csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    code, error = predict_main(monkeypatch, capsys, "--ckpt", inputs["ckpt"], "--input", inputs["npy"], "--fs", 50,
                               "--leads", ",".join(TINY_LEADS), "--out", out)
    assert code == 2 and "No space left on device" in error
    assert tree(root) == before
    code, error = predict_main(monkeypatch, capsys, *args[:-1], root / "new" / "sub" / "p.csv")
    assert code == 2 and "No space left on device" in error
    assert tree(root) == before  # and no folder made for them
