"""pdd_split.py and pdd_folder_generator.py: bucket sizes, class balance, stage contents, links, staleness."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import pdd
from common.preprocess import PreprocessConfig, preprocess
from common.difficulty import save_difficulty

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def scored_dir(sample_dir, tmp_path) -> Path:
    """The PTB-XL sample as a data dir, with known difficulty scores (a seeded permutation)."""
    data = tmp_path / "baseline"
    meta = preprocess(PreprocessConfig(input_dir=sample_dir, out_dir=data, val_folds=[8], test_folds=[9], workers=1), "t")
    scores = np.random.default_rng(0).permutation(meta["counts"]["train"]).astype(np.float32)
    save_difficulty(data, scores, {"score": "loss", "checkpoint": "test"})
    return data


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a top-level script from cwd as a user would."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True)


def test_bucket_rows_exact_sizes_and_order():
    scores = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0])
    bucket = pdd.bucket_rows(scores, (1, 1, 1))
    assert np.bincount(bucket).tolist() == [3, 3, 3]
    assert sorted(scores[bucket == 0]) == [1, 2, 3] and sorted(scores[bucket == 2]) == [7, 8, 9]
    assert np.bincount(pdd.bucket_rows(np.arange(12.0), (2, 1, 1)), minlength=3).tolist() == [6, 3, 3]


def test_split_writes_buckets_table_and_histogram(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    result = run("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
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
    save_difficulty(scored_dir, scores, {"score": "loss", "checkpoint": "test"})
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
    result = run("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
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


def test_disjoint_stages(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd.generate_stages(scored_dir, out, out, mode="disjoint")
    for k, name in enumerate(pdd.BUCKETS, start=1):
        meta = json.loads((out / f"stage{k}" / "meta.json").read_text())
        assert meta["pdd"]["train_rows"] == np.sort(np.load(out / f"{name}_idx.npy")).tolist()
        assert meta["pdd"]["buckets"] == [name]


def test_rerun_is_idempotent(scored_dir, tmp_path):
    out = tmp_path / "pdd"
    pdd.split_difficulty(scored_dir, out)
    pdd.generate_stages(scored_dir, out, out)
    first = {k: json.loads((out / f"stage{k}" / "meta.json").read_text())["fingerprint"] for k in (1, 2, 3)}
    pdd.split_difficulty(scored_dir, out)
    pdd.generate_stages(scored_dir, out, out)
    assert {k: json.loads((out / f"stage{k}" / "meta.json").read_text())["fingerprint"] for k in (1, 2, 3)} == first
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


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
    result = run("pdd_split.py", "--data_dir", str(scored_dir), "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 1 and "re-run compute_difficulty.py" in result.stderr
    result = run("pdd_folder_generator.py", "--data_dir", str(scored_dir), "--split_dir", str(out),
                 "--out_dir", str(out), cwd=tmp_path)
    assert result.returncode == 1 and "re-run compute_difficulty.py" in result.stderr and "pdd_split.py" in result.stderr
    assert not (out / "stage1").exists()
