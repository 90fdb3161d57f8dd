"""pdd_split.py and pdd_folder_generator.py: bucket sizes, class balance, stage contents, links, staleness; bad
scores, fractions and files refused before anything is written; killed runs recovered by the same command."""
import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import matplotlib.text
import numpy as np
import pytest

from common import pdd, pdd_stages
from common.datadir import DataDir, file_sha256
from common.difficulty import save_difficulty
from common.errors import ConfigError
from common.preprocess import PreprocessConfig, preprocess
from common.traindata import load_data
from conftest import ROOT, kill_when, patched_script, run_repo_script


@pytest.fixture(scope="module")
def scored_source(sample_dir, tmp_path_factory) -> Path:
    """The PTB-XL sample as a data dir, with known difficulty scores (a seeded permutation), built once."""
    data = tmp_path_factory.mktemp("scored") / "baseline"
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=data, val_folds=[8], test_folds=[9], workers=1), "t")
    scores = np.random.default_rng(0).permutation(meta["counts"]["train"]).astype(np.float32)
    save_difficulty(DataDir(data), scores, {"score": "loss", "checkpoint": "test"})
    return data


@pytest.fixture()
def scored_dir(scored_source, tmp_path) -> Path:
    """A copy of scored_source of the test's own, free to change or break."""
    return Path(shutil.copytree(scored_source, tmp_path / "baseline"))


def test_bucket_rows_exact_sizes_and_order():
    scores = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0])
    bucket = pdd.bucket_rows(scores, (1, 1, 1))
    assert np.bincount(bucket).tolist() == [3, 3, 3]
    assert sorted(scores[bucket == 0]) == [1, 2, 3] and sorted(scores[bucket == 2]) == [7, 8, 9]
    assert np.bincount(pdd.bucket_rows(np.arange(12.0), (2, 1, 1)), minlength=3).tolist() == [6, 3, 3]


def test_split_writes_buckets_table_and_histogram(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    result = run_repo_script("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "easy" in result.stdout and "hard" in result.stdout
    scores = np.load(scored_dir / "difficulty.npy")
    idx = {name: np.load(out / f"{name}_idx.npy") for name in pdd.BUCKETS}
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(len(scores)))
    sizes = [len(idx[name]) for name in pdd.BUCKETS]
    assert max(sizes) - min(sizes) <= 1
    assert scores[idx["easy"]].max() < scores[idx["medium"]].min() <= scores[idx["medium"]].max() < scores[idx["hard"]].min()
    splits = json.loads((out / "splits.json").read_text())
    assert splits["thresholds"] == [float(scores[idx["easy"]].max()), float(scores[idx["medium"]].max())]
    y = np.load(scored_dir / "y_train.npy")
    assert splits["buckets"]["hard"]["class_balance"]["MI"] == int(y[idx["hard"], 2].sum())
    assert (out / "difficulty_hist.png").stat().st_size > 1000


def test_per_class_buckets_keep_every_class(scored_dir, tmp_path):
    y = np.load(scored_dir / "y_train.npy")
    scores = y[:, 1] * 100 + np.arange(len(y)) / len(y)  # HYP records all hardest: a global split puts them in hard
    save_difficulty(DataDir(scored_dir), scores, {"score": "loss", "checkpoint": "test"})
    plain = pdd.split_difficulty(scored_dir, tmp_path / "g")
    assert plain["buckets"]["easy"]["class_balance"]["HYP"] == 0
    per_class = pdd.split_difficulty(scored_dir, tmp_path / "c", per_class=True)
    for name in pdd.BUCKETS:
        assert all(n > 0 for n in per_class["buckets"][name]["class_balance"].values()), name
    assert set(per_class["class_thresholds"]) <= set(per_class["buckets"]["easy"]["class_balance"])


def inode(path: Path) -> int:
    """Inode of the file a path resolves to."""
    return os.stat(path).st_ino


def test_cumulative_stages_link_and_subset(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    result = run_repo_script("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
                 "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--resume pdd_ckpt/stage2/last.pt" in result.stdout
    easy, medium = np.load(out / "easy_idx.npy"), np.load(out / "medium_idx.npy")
    expected = [np.sort(easy), np.sort(np.concatenate([easy, medium])), np.arange(len(np.load(scored_dir / "y_train.npy")))]
    X_all = np.load(scored_dir / "X_train.npy")
    y_all = np.load(scored_dir / "y_train.npy")
    for k, rows in enumerate(expected, start=1):
        stage = out / f"stage{k}"
        meta = json.loads((stage / "meta.json").read_text())
        assert meta["pdd"]["train_rows"] == rows.tolist() and meta["counts"]["train"] == len(rows)
        assert meta["pdd"]["train_until_epoch"] == 10 * k and meta["pdd"]["schedule_epochs"] == 30
        np.testing.assert_array_equal(np.load(stage / "X_train.npy"), X_all[rows])
        np.testing.assert_array_equal(np.load(stage / "y_train.npy"), y_all[rows])
        for name in ("X_val.npy", "y_val.npy", "X_test.npy", "y_test.npy"):
            assert inode(stage / name) == inode(scored_dir / name), name  # linked, not copied
        assert meta["normalisation"] == json.loads((scored_dir / "meta.json").read_text())["normalisation"]
        ids = json.loads((scored_dir / "meta.json").read_text())["splits"]["train"]["record_ids"]
        assert meta["splits"]["train"]["record_ids"] == [ids[i] for i in rows]
    assert inode(out / "stage3" / "X_train.npy") == inode(scored_dir / "X_train.npy")  # all of train: linked too


def test_stages_name_their_source_and_scorer_relative_to_themselves_and_move_with_them(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    assert json.loads((out / "splits.json").read_text())["checkpoint"] == "../baseline/test"
    meta = json.loads((out / "stage1" / "meta.json").read_text())
    assert meta["pdd"]["source_data_dir"] == "../../baseline" and meta["pdd"]["checkpoint"] == "../../baseline/test"
    n_train = len(np.load(scored_dir / "y_train.npy"))
    moved = tmp_path / "elsewhere" / "project"
    moved.mkdir(parents=True)
    for name in ("baseline", "pdd"):
        os.rename(tmp_path / name, moved / name)
    assert load_data(moved / "pdd" / "stage1", 2.0).full_train == n_train  # the source found from its new place


def test_disjoint_stages(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out, mode="disjoint")
    for k, name in enumerate(pdd.BUCKETS, start=1):
        meta = json.loads((out / f"stage{k}" / "meta.json").read_text())
        assert meta["pdd"]["train_rows"] == np.sort(np.load(out / f"{name}_idx.npy")).tolist()
        assert meta["pdd"]["buckets"] == [name]


def test_rerun_is_idempotent(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    first = {k: json.loads((out / f"stage{k}" / "meta.json").read_text())["fingerprint"] for k in (1, 2, 3)}
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    assert {k: json.loads((out / f"stage{k}" / "meta.json").read_text())["fingerprint"] for k in (1, 2, 3)} == first
    assert hidden(out) == []


def test_an_out_dir_that_is_a_file_is_named(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    (tmp_path / "taken").write_text("mine")
    result = run_repo_script("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
                             "--out_dir", str(tmp_path / "taken" / "stages"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == (f"error: --out_dir {tmp_path / 'taken' / 'stages'} "
                                                                f"runs through {tmp_path / 'taken'}, which is not a "
                                                                f"folder; choose another --out_dir")
    assert (tmp_path / "taken").read_text() == "mine" and hidden(tmp_path) == []


def test_a_split_file_that_is_a_folder_is_named(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    (out / "splits.json").mkdir(parents=True)
    result = run_repo_script("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --out_dir splits.json {out / 'splits.json'} is a folder, not a file; "
                                     f"choose another --out_dir")
    assert [p.name for p in out.iterdir()] == ["splits.json"]


def test_stale_inputs_are_refused(sample_dir, scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=scored_dir, val_folds=[7], test_folds=[9],
                                overwrite=True, workers=1), "t")
    with pytest.raises(FileNotFoundError, match="run compute_difficulty.py"):
        pdd.split_difficulty(scored_dir, out)  # the rebuilt data dir has no scores yet
    scores = np.zeros(json.loads((scored_dir / "meta.json").read_text())["counts"]["train"] + 1, dtype=np.float32)
    np.save(scored_dir / "difficulty.npy", scores)
    (scored_dir / "difficulty.json").write_text(json.dumps({"data_fingerprint": "old", "score": "loss"}))
    result = run_repo_script("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "re-run compute_difficulty.py" in result.stderr
    result = run_repo_script("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
                 "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "re-run compute_difficulty.py" in result.stderr and "pdd_split.py" in result.stderr
    assert not (out / "stage1").exists()


def rebuild(sample_dir: Path, data_dir: Path) -> None:
    """Rebuild a data dir in place from the sample with another validation fold, as `preprocess.py --overwrite` does."""
    preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=data_dir, val_folds=[7], test_folds=[9],
                                overwrite=True, workers=1), "t")


def test_stages_linked_by_symlinks_refuse_a_rebuilt_source(sample_dir, scored_dir, tmp_path, monkeypatch):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)

    def other_filesystem(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), str(dst))

    monkeypatch.setattr(os, "link", other_filesystem)
    pdd_stages.generate_stages(scored_dir, out, out)
    monkeypatch.undo()
    assert (out / "stage1" / "X_val.npy").is_symlink() and (out / "stage3" / "X_train.npy").is_symlink()
    load_data(out / "stage1", 2.0)
    rebuild(sample_dir, scored_dir)
    for k in (1, 2, 3):
        stage = out / f"stage{k}"
        with pytest.raises(ConfigError, match=re.escape(f"{stage} links its arrays to {scored_dir.resolve()}, which "
                                                        f"was rebuilt since") + ".*re-run pdd_folder_generator.py"):
            load_data(stage, 2.0)


def test_a_hard_linked_stage_keeps_its_records_when_the_source_is_rebuilt(sample_dir, scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    X_val = np.load(out / "stage1" / "X_val.npy")
    rebuild(sample_dir, scored_dir)
    assert np.load(scored_dir / "X_val.npy").shape != X_val.shape  # the source holds other records now
    np.testing.assert_array_equal(load_data(out / "stage1", 2.0).X["val"], X_val)


def write_raw_scores(data_dir: Path, scores: np.ndarray) -> None:
    """difficulty.npy and a difficulty.json describing it, written as another tool might, without save_difficulty's
    checks."""
    np.save(data_dir / "difficulty.npy", scores)
    meta = json.loads((data_dir / "meta.json").read_text())
    (data_dir / "difficulty.json").write_text(json.dumps({
        "score": "loss", "checkpoint": "test", "data_fingerprint": meta["fingerprint"]["dataset"],
        "n_train": len(scores), "sha256": file_sha256(data_dir / "difficulty.npy")}))


def contents(folder: Path) -> dict[str, bytes]:
    """Every file below a folder but the hidden ones (temporary), by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def hidden(folder: Path) -> list[str]:
    """Names of the hidden (temporary) entries in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_refused_before_anything_is_written(scored_dir, tmp_path, bad):
    scores = np.load(scored_dir / "difficulty.npy")
    scores[5] = bad
    write_raw_scores(scored_dir, scores)
    out = tmp_path / "pdd"
    result = run_repo_script("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{scored_dir / 'difficulty.npy'}: 1 of {len(scores)} scores are NaN or infinite (rows 5)" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("fractions, message", [
    ((0, 1, 1), "three finite positive numbers"), ((-1, 1, 1), "three finite positive numbers"),
    ((np.inf, 1, 1), "three finite positive numbers"), ((np.nan, 1, 1), "three finite positive numbers"),
    ((1e-9, 1, 1), "leave the easy bucket empty"), ((1, 1, 1e-9), "leave the hard bucket empty"),
])
def test_impossible_fractions_are_refused_and_the_previous_split_stays(scored_dir, tmp_path, fractions, message):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    before = contents(out)
    with pytest.raises(ValueError, match=message):
        pdd.split_difficulty(scored_dir, out, fractions)
    assert contents(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["baseline", "pdd"]


def test_impossible_fractions_on_the_command_line_exit_2_and_write_nothing(scored_dir, tmp_path):
    result = run_repo_script("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(tmp_path / "pdd"),
                 "--fractions", "1e-9", "1", "1", cwd=tmp_path)
    assert result.returncode == 2 and "leave the easy bucket empty" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "pdd").exists()


def hand_edit(split_dir: Path, name: str, idx: np.ndarray, count: int | None = None) -> None:
    """Replace an index file and make splits.json describe it (SHA-256, and count when given), as an edit by hand
    or another tool would."""
    np.save(split_dir / f"{name}_idx.npy", idx)
    splits = json.loads((split_dir / "splits.json").read_text())
    splits["sha256"][f"{name}_idx.npy"] = file_sha256(split_dir / f"{name}_idx.npy")
    if count is not None:
        splits["buckets"][name]["count"] = count
    (split_dir / "splits.json").write_text(json.dumps(splits))


@pytest.mark.parametrize("problem, message", [
    ("mixed with another run", "easy_idx.npy is not the file .*splits.json describes"),
    ("row out of range", "easy_idx.npy holds rows outside 0..N"),
    ("row twice in a bucket", "easy_idx.npy lists a row more than once"),
    ("count differs", "easy_idx.npy must hold the K row numbers splits.json counts"),
    ("empty bucket", r"easy_idx.npy must hold the 0 row numbers splits.json counts for easy \(at least one\)"),
    ("not integers", "easy_idx.npy must hold the K row numbers"),
    ("row in two buckets", r"\{easy,medium,hard\}_idx.npy must put each of the N training rows in exactly one"),
])
def test_generator_checks_the_index_files_against_splits_json(scored_dir, tmp_path, problem, message):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    easy, medium = np.load(out / "easy_idx.npy"), np.load(out / "medium_idx.npy")
    n_train = json.loads((out / "splits.json").read_text())["n_train"]
    if problem == "mixed with another run":  # pdd_split killed between its renames: new easy, old splits.json
        np.save(out / "easy_idx.npy", easy[::-1].copy())
    elif problem == "row out of range":
        hand_edit(out, "easy", np.concatenate([easy[:-1], [n_train]]))
    elif problem == "row twice in a bucket":
        hand_edit(out, "easy", np.concatenate([easy[:-1], easy[:1]]))
    elif problem == "count differs":
        hand_edit(out, "easy", easy[:-1])
    elif problem == "empty bucket":
        hand_edit(out, "easy", np.zeros(0, dtype=np.int64), count=0)
    elif problem == "not integers":
        hand_edit(out, "easy", easy.astype(np.float64))
    else:
        hand_edit(out, "easy", np.concatenate([easy[:-1], medium[:1]]))
    message = message.replace("N", str(n_train - (problem == "row out of range"))).replace("K", str(len(easy)))
    with pytest.raises(ValueError, match=message):
        pdd_stages.generate_stages(scored_dir, out, out)
    assert not any(p.name.startswith("stage") for p in out.iterdir())


def test_a_mixed_split_on_the_command_line_exits_2_naming_the_file(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    np.save(out / "hard_idx.npy", np.load(out / "hard_idx.npy")[::-1].copy())
    result = run_repo_script("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
                 "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2 and f"{out / 'hard_idx.npy'} is not the file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (out / "stage1").exists()


@pytest.mark.parametrize("name, reader", [
    ("y_train.npy", "split"), ("meta.json", "split"), ("difficulty.json", "split"), ("X_val.npy", "generator"),
    ("X_train.npy", "generator"), ("splits.json", "generator"),
])
def test_a_truncated_input_file_is_named(scored_dir, tmp_path, name, reader):
    out = tmp_path / "pdd"
    if reader == "generator":
        pdd.split_difficulty(scored_dir, out)
    path = (out if name == "splits.json" else scored_dir) / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        if reader == "split":
            pdd.split_difficulty(scored_dir, out)
        else:
            pdd_stages.generate_stages(scored_dir, out, out)
    assert not (out / "stage1").exists() and (reader == "generator" or not out.exists())


def test_missing_difficulty_json_is_named(scored_dir, tmp_path):
    (scored_dir / "difficulty.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{scored_dir / 'difficulty.json'} not found")):
        pdd.split_difficulty(scored_dir, tmp_path / "pdd")


def run_killed(script: str, args: list[str], patch: str, wait_for: Callable[[], bool], cwd: Path) -> None:
    """Start a script with `patch` (Python run first, in the same process) making it slow at a chosen point, wait
    until wait_for() holds, then kill -9 it."""
    proc = subprocess.Popen(patched_script(Path(script), args, patch), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    kill_when(proc, wait_for, f"the point in {script} where it was to be killed")


@pytest.mark.slow
def test_generator_killed_while_building_is_rebuilt_by_the_same_command(scored_dir, tmp_path):
    out, clean = tmp_path / "pdd", tmp_path / "clean"
    pdd.split_difficulty(scored_dir, out)
    args = ["--data_dir", str(scored_dir), "--split_dir", str(out), "--out_dir", str(out)]
    slow_stage2 = ("import time, common.pdd_stages as p\nwrite = p.write_subset\n"
                   "p.write_subset = lambda src, dst, rows: (write(src, dst, rows), '.stage2.' in str(dst) and "
                   "time.sleep(600))")
    run_killed(str(ROOT / "pdd_folder_generator.py"), args, slow_stage2,
               lambda: any((d / "X_train.npy").exists() for d in out.glob("..stages.tmp-*/.stage2.tmp-*")), tmp_path)
    assert not any((out / f"stage{k}").exists() for k in (1, 2, 3)) and list(out.glob("..stages.tmp-*"))
    result = run_repo_script("pdd_folder_generator.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert run_repo_script("pdd_folder_generator.py", *args[:4], "--out_dir", str(clean), cwd=tmp_path).returncode == 0
    for k in (1, 2, 3):
        assert contents(out / f"stage{k}") == contents(clean / f"stage{k}")
    assert hidden(out) == []


def stage_metas(out: Path) -> list[dict]:
    """meta.json of stage1..3."""
    return [json.loads((out / f"stage{k}" / "meta.json").read_text()) for k in (1, 2, 3)]


@pytest.mark.slow
def test_generator_killed_during_a_re_split_leaves_every_stage_from_one_split(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    old = stage_metas(out)
    write_raw_scores(scored_dir, np.load(scored_dir / "difficulty.npy")[::-1].copy())
    pdd.split_difficulty(scored_dir, out)
    args = ["--data_dir", str(scored_dir), "--split_dir", str(out), "--out_dir", str(out)]
    built = tmp_path / "stage1_built"
    slow_after_stage1 = (f"import pathlib, time, common.pdd_stages as p\nbuild = p.build_stage\n"
                         f"def slow(data_dir, stage_dir, rows, info, final_dir=None):\n"
                         f"    meta = build(data_dir, stage_dir, rows, info, final_dir)\n"
                         f"    if info['stage'] == 1:\n        pathlib.Path({str(built)!r}).touch()\n"
                         f"        time.sleep(600)\n    return meta\np.build_stage = slow")
    run_killed(str(ROOT / "pdd_folder_generator.py"), args, slow_after_stage1, built.exists, tmp_path)
    assert stage_metas(out) == old  # the new stage1 was never moved in
    new_split = pdd_stages.split_id(json.loads((out / "splits.json").read_text()))
    assert len({meta["pdd"]["split_id"] for meta in old}) == 1 and old[0]["pdd"]["split_id"] != new_split
    result = run_repo_script("pdd_folder_generator.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [meta["pdd"]["split_id"] for meta in stage_metas(out)] == [new_split] * 3 and hidden(out) == []


@pytest.mark.slow
def test_generator_killed_while_swapping_the_stages_in_is_finished_by_the_next_run(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    write_raw_scores(scored_dir, np.load(scored_dir / "difficulty.npy")[::-1].copy())
    pdd.split_difficulty(scored_dir, out)
    new_split = pdd_stages.split_id(json.loads((out / "splits.json").read_text()))
    args = ["--data_dir", str(scored_dir), "--split_dir", str(out), "--out_dir", str(out)]
    moved = tmp_path / "stage1_moved"
    slow_after_stage1 = (f"import os, pathlib, time\nreplace = os.replace\n"
                         f"def slow(src, dst):\n    replace(src, dst)\n"
                         f"    if pathlib.Path(dst) == pathlib.Path({str(out / 'stage1')!r}):\n"
                         f"        pathlib.Path({str(moved)!r}).touch()\n        time.sleep(600)\nos.replace = slow")
    run_killed(str(ROOT / "pdd_folder_generator.py"), args, slow_after_stage1, moved.exists, tmp_path)
    assert stage_metas(out)[0]["pdd"]["split_id"] == new_split and stage_metas(out)[1]["pdd"]["split_id"] != new_split
    result = run_repo_script("pdd_folder_generator.py", *args[:2], "--split_dir", str(tmp_path / "nowhere"),
                             "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2  # refused inputs, but the set the killed run left ready is swapped in first
    assert [meta["pdd"]["split_id"] for meta in stage_metas(out)] == [new_split] * 3 and hidden(out) == []


@pytest.mark.parametrize("foreign", ["a file of the user's", "a folder that is no stage", "a file named stage2"])
def test_generator_never_replaces_what_it_did_not_write(scored_dir, tmp_path, foreign):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd_stages.generate_stages(scored_dir, out, out)
    stage2 = out / "stage2"
    if foreign == "a file of the user's":
        (stage2 / "notes.txt").write_text("mine")
    elif foreign == "a folder that is no stage":
        for path in stage2.iterdir():
            path.unlink()
        (stage2 / "meta.json").write_text("{}")
    else:
        for path in stage2.iterdir():
            path.unlink()
        stage2.rmdir()
        stage2.write_text("mine")
    before = contents(out)
    result = run_repo_script("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
                             "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--out_dir {stage2} exists and is not a stage pdd_folder_generator.py built" in result.stderr
    assert "move it away or choose another --out_dir" in result.stderr
    assert contents(out) == before and hidden(out) == []


@pytest.mark.slow
def test_split_killed_while_writing_leaves_the_previous_split_and_is_cleared_by_the_next(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    before = contents(out)
    write_raw_scores(scored_dir, np.load(scored_dir / "difficulty.npy")[::-1].copy())
    slow_plot = ("import time, common.pdd as p\nplot = p.plot_histogram\n"
                 "p.plot_histogram = lambda *a, **k: (plot(*a, **k), time.sleep(600))")
    run_killed(str(ROOT / "pdd_split.py"), ["--data_dir", str(scored_dir), "--out_dir", str(out)], slow_plot,
               lambda: any((d / pdd.HISTOGRAM_PNG).exists() for d in out.glob("..split.tmp-*")), tmp_path)
    assert contents(out) == before and hidden(out) != []
    result = run_repo_script("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert contents(out) != before and hidden(out) == []
    pdd_stages.generate_stages(scored_dir, out, out)


def test_histogram_of_long_tailed_scores_is_readable():
    scores = np.random.default_rng(0).lognormal(np.log(0.05), 1.1, 5000).clip(1e-3, 2.4)
    bucket = pdd.bucket_rows(scores, (1, 1, 1))
    fig = pdd.histogram_figure(scores, bucket, pdd.upper_edges(scores, bucket), "difficulty (loss)")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [label.split(":")[0] for label in labels] == list(pdd.BUCKETS)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    overlapping = [(a.get_text(), b.get_text()) for i, (a, box_a) in enumerate(zip(texts, boxes))
                   for b, box_b in zip(texts[i + 1:], boxes[i + 1:]) if box_a.overlaps(box_b)]
    assert overlapping == []
