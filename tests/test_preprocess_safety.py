"""preprocess.py never destroys what it did not write, never runs twice into one --out_dir, never lets a record or
a patient into two splits, and names the flag and the fix for a bad --out_dir or fold column."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.datadir import load_meta
from common.locks import try_lock
from common.preprocess import PreprocessConfig, preprocess
from test_preprocess import ROOT, copy_sample, run_cli


@pytest.fixture
def raw(sample_dir, tmp_path) -> Path:
    """A PTB-XL-layout copy of the sample's first 60 records (folds 1-9)."""
    return copy_sample(sample_dir, tmp_path / "raw", 60)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file below folder (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def config(raw: Path, out: Path, **options) -> PreprocessConfig:
    """The test runs' settings: PTB-XL folds, fold 8 val and fold 9 test, one worker."""
    return PreprocessConfig(input_dir=raw, out_dir=out,
                            **{"val_folds": [8], "test_folds": [9], "workers": 1, **options})


def leftovers(folder: Path) -> list[str]:
    """Hidden names (staging folders, lock files) beside or inside folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["same", "inside", "contains", "link"])
def test_out_dir_overlapping_input_dir_is_refused_and_raw_data_kept(raw, tmp_path, where):
    out = {"same": raw, "inside": raw / "results", "contains": tmp_path, "link": tmp_path / "link"}[where]
    if where == "link":
        out.symlink_to(raw)
    before = tree(raw)
    result = run_cli("--input_dir", str(raw), "--out_dir", str(out), "--val_folds", "8", "--test_folds", "9",
                     "--overwrite")
    relation = {"same": "is", "inside": "lies inside", "contains": "contains", "link": "is"}[where]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --out_dir {out} {relation} --input_dir {raw}; choose an --out_dir outside the raw data")
    assert tree(raw) == before and not (raw / "results").exists() and not leftovers(tmp_path)


def test_overwrite_replaces_only_what_preprocess_wrote(raw, tmp_path, caplog):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "keep.npy").write_bytes(b"theirs")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        preprocess(config(raw, out), "t")
    assert sorted(tree(out)) == ["notes.txt", "sub/keep.npy"]

    preprocess(config(raw, out, overwrite=True), "t")
    assert "holds other files and no meta.json of preprocess.py: writing" in caplog.text
    assert (out / "notes.txt").read_text() == "mine" and (out / "sub" / "keep.npy").read_bytes() == b"theirs"
    assert (out / "meta.json").is_file() and np.load(out / "X_train.npy").shape[1:] == (12, 1000)

    meta = preprocess(config(raw, out, val_folds=[7], overwrite=True), "t")  # another dataset over the first
    assert meta["split"]["val_folds"] == [7]
    assert sorted(tree(out)) == sorted(["notes.txt", "sub/keep.npy", "meta.json", "X_train.npy", "y_train.npy",
                                        "X_val.npy", "y_val.npy", "X_test.npy", "y_test.npy"])
    assert (out / "notes.txt").read_text() == "mine" and not leftovers(tmp_path) and not leftovers(out)


DIFFICULTY = {"difficulty.npy": b"\x93NUMPY scores", "difficulty.csv": b"row,score\n", "difficulty.json": b"{}\n"}


def test_rerun_keeps_difficulty_and_a_changed_dataset_moves_it_aside(raw, tmp_path, caplog):
    out = tmp_path / "o"
    first = preprocess(config(raw, out), "t")
    for name, data in DIFFICULTY.items():
        (out / name).write_bytes(data)

    assert preprocess(config(raw, out), "t")["fingerprint"] == first["fingerprint"]
    assert {name: (out / name).read_bytes() for name in DIFFICULTY} == DIFFICULTY

    caplog.clear()
    second = preprocess(config(raw, out, val_folds=[7], overwrite=True), "t")
    assert second["fingerprint"]["dataset"] != first["fingerprint"]["dataset"]
    aside = out / f"stale-{first['fingerprint']['dataset'][:12]}"
    assert tree(aside) == DIFFICULTY and not any((out / name).exists() for name in DIFFICULTY)
    assert f"moved difficulty.csv, difficulty.json, difficulty.npy into {aside}" in caplog.text
    assert not leftovers(tmp_path)


def test_a_run_failing_while_it_swaps_the_files_in_leaves_no_loadable_mix(raw, tmp_path, monkeypatch):
    out = tmp_path / "o"
    preprocess(config(raw, out), "t")
    (out / "notes.txt").write_text("mine")
    replace, moved = os.replace, []

    def fail_after_one_array(source, target):
        if Path(target).parent == out:
            if moved:
                raise OSError(28, "No space left on device")
            moved.append(Path(target).name)
        replace(source, target)

    monkeypatch.setattr(os, "replace", fail_after_one_array)
    with pytest.raises(OSError, match="No space left"):
        preprocess(config(raw, out, val_folds=[7], overwrite=True), "t")
    monkeypatch.undo()
    assert moved == ["X_train.npy"] and not (out / "meta.json").exists()
    with pytest.raises(FileNotFoundError, match="is not a data dir"):
        load_meta(out)
    assert leftovers(tmp_path) == [] and (out / "notes.txt").read_text() == "mine"
    assert preprocess(config(raw, out, val_folds=[7], overwrite=True), "t")["split"]["val_folds"] == [7]


HELD_RUN = """import sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import common.preprocess as stage
read_all = stage.read_all

def held(*args):
    Path({started!r}).touch()
    deadline = time.monotonic() + 60
    while not Path({go!r}).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return read_all(*args)

stage.read_all = held
stage.preprocess(stage.PreprocessConfig(input_dir=Path({raw!r}), out_dir=Path({out!r}), val_folds=[8],
                                        test_folds=[9], workers=1), "first")
"""


@pytest.mark.slow
def test_second_run_on_the_same_out_dir_is_refused_while_the_first_writes(raw, tmp_path):
    out, started, go = tmp_path / "o", tmp_path / "started", tmp_path / "go"
    script = HELD_RUN.format(root=str(ROOT), started=str(started), go=str(go), raw=str(raw), out=str(out))
    first = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), "the first run never reached its reading step"
        second = run_cli("--input_dir", str(raw), "--out_dir", str(out), "--val_folds", "7", "--test_folds", "9",
                         "--overwrite")
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: another preprocess.py is writing {out}; wait for it to end")
    finally:
        go.touch()
        _, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    assert json.loads((out / "meta.json").read_text())["split"]["val_folds"] == [8]
    assert leftovers(tmp_path) == []


def test_lock_held_by_another_process_is_named(raw, tmp_path):
    out = tmp_path / "o"
    lock = try_lock(out)
    try:
        with pytest.raises(OSError, match=f"another preprocess.py is writing {out}; wait for it to end"):
            preprocess(config(raw, out), "t")
    finally:
        lock.release()
    assert not out.exists()


def edit_database(raw: Path, edit) -> None:
    """Rewrite raw/ptbxl_database.csv with edit(table) -> table."""
    table = pd.read_csv(raw / "ptbxl_database.csv")
    edit(table).to_csv(raw / "ptbxl_database.csv", index=False)


def append_copy_of_row(table: pd.DataFrame, row: int, **changes) -> pd.DataFrame:
    """The table with a copy of its row `row` (0-based) appended, with some cells changed."""
    return pd.concat([table, table.iloc[[row]].assign(**changes)], ignore_index=True)


@pytest.mark.parametrize("change, why", [
    ({}, "ecg_id 3"),
    ({"ecg_id": 1000}, "file records100/00000/00003_lr"),
    ({"ecg_id": 1000, "filename_lr": "records100/00000/00003_lr.hea"}, "file records100/00000/00003_lr"),
    ({"ecg_id": 1000, "filename_lr": "records100/00000/../00000/00003_lr"}, "file records100/00000/00003_lr"),
])
def test_a_record_listed_twice_in_a_ptbxl_table_is_refused_or_deduplicated(raw, tmp_path, change, why):
    edit_database(raw, lambda t: append_copy_of_row(t, 2, **change))
    csv = raw / "ptbxl_database.csv"
    with pytest.raises(ValueError) as error:
        preprocess(config(raw, tmp_path / "o"), "t")
    assert str(error.value) == (
        f"{csv} has 1 repeated row: row 61 repeats row 3 ({why}); delete the repeated rows, or pass --dedupe to keep "
        "the first row of each record")
    assert not (tmp_path / "o").exists() and not leftovers(tmp_path)

    meta = preprocess(config(raw, tmp_path / "o", dedupe=True), "t")
    ids = [rid for part in meta["splits"].values() for rid in part["record_ids"]]
    assert ids.count(3) == 1 and 1000 not in ids
    assert meta["deduplicated"] == [{"row": 61, "same_as_row": 3, "why": why}]


def test_a_record_listed_twice_in_a_generic_csv_is_refused(raw, tmp_path):
    table = pd.read_csv(raw / "ptbxl_database.csv")
    rows = pd.DataFrame({"record": table["filename_lr"], "labels": "A", "patient_id": table["patient_id"].astype(str)})
    rows.loc[len(rows)] = ["./" + rows.loc[4, "record"] + ".hea", "B", "p"]
    rows.loc[len(rows)] = [rows.loc[7, "record"], "B", "q"]
    rows.to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(ValueError) as error:
        preprocess(PreprocessConfig(input_dir=raw, meta_csv=tmp_path / "g.csv", out_dir=tmp_path / "o"), "t")
    assert str(error.value) == (
        f"{tmp_path / 'g.csv'} has 2 repeated rows: row 61 repeats row 5 (file records100/00000/00005_lr), row 62 "
        "repeats row 8 (record records100/00000/00008_lr); delete the repeated rows, or pass --dedupe to keep the "
        "first row of each record")


def test_a_patient_across_folds_that_straddles_splits_is_refused(raw, tmp_path):
    table = pd.read_csv(raw / "ptbxl_database.csv")
    in_val = table.loc[table["strat_fold"] == 8].iloc[0]
    train_row = int(np.flatnonzero(table["strat_fold"] == 1)[0])
    table.loc[train_row, "patient_id"] = in_val["patient_id"]
    table.to_csv(raw / "ptbxl_database.csv", index=False)
    with pytest.raises(ValueError) as error:
        preprocess(config(raw, tmp_path / "o"), "t")
    assert str(error.value) == (
        f"1 patient has records in more than one split under --val_folds 8 --test_folds 9: patient "
        f"{in_val['patient_id']} (folds 1, 8); fix the folds in {raw / 'ptbxl_database.csv'}, or pass "
        "--allow_patient_across_folds to split by fold anyway")
    meta = preprocess(config(raw, tmp_path / "o", allow_patient_across_folds=True), "t")
    assert meta["split"]["patients_across_splits"] == [str(in_val["patient_id"])]


def test_a_blank_fold_cell_is_an_error_not_a_random_split(raw, tmp_path):
    edit_database(raw, lambda t: t.assign(strat_fold=t["strat_fold"].mask(t.index.isin([5, 9]))))
    with pytest.raises(ValueError) as error:
        preprocess(config(raw, tmp_path / "new" / "deep" / "o"), "t")
    assert str(error.value) == (
        f"{raw / 'ptbxl_database.csv'}: 2 records have no strat_fold (rows 6, 10); fill those cells in, or pass "
        "--split random to split by patient instead")
    assert not (tmp_path / "new").exists()  # the folders made for the lock file go again
    assert preprocess(config(raw, tmp_path / "o", split="random"), "t")["split"]["method"] == "random"


def test_out_dir_through_a_file_names_the_flag_and_the_file(raw, tmp_path):
    (tmp_path / "a").write_text("a file")
    result = run_cli("--input_dir", str(raw), "--out_dir", str(tmp_path / "a" / "b"), "--val_folds", "8",
                     "--test_folds", "9")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --out_dir {tmp_path / 'a' / 'b'} cannot be created: {tmp_path / 'a'} is a file, not a folder; "
        "choose another --out_dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "raw"]
