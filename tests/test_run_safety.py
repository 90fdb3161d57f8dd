"""Training runs are never lost or mixed up: run-dir claims, resume semantics, schedules, bad checkpoints,
interrupted reports, per-rank seeds (issue 8), on tiny synthetic data."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import common.train
from common.checkpoint import load_checkpoint, save_checkpoint
from common.datadir import fingerprint_arrays
from common.train import Dist, TrainConfig, epoch_batches, main, one_cycle_lr, seed_process, train
from conftest import ROOT, TINY_TRAIN, TINY_TRAIN_FLAGS, tiny_train_config
from train_1d_baseline import parse_args

TINY_FLAGS = TINY_TRAIN_FLAGS
tiny_config = partial(tiny_train_config, epochs=3)


def cli(*args: object) -> TrainConfig:
    """The config train_1d_baseline.py builds from these flags (with given options recorded)."""
    return parse_args([str(a) for a in args])


def history_lrs(run: Path) -> list[float]:
    return [row["lr"] for row in load_checkpoint(run / "last.pt")["state"]["history"]]


def test_a_run_dir_holding_another_run_is_refused_unless_overwrite(tiny_data_dir: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, epochs=1))
    first = (run / "last.pt").read_bytes()
    assert main(tiny_config(tiny_data_dir, run, epochs=2, seed=1)) == 2
    error = capsys.readouterr().err
    assert f"{run} holds another run" in error and "--overwrite" in error and f"--resume {run / 'last.pt'}" in error
    assert (run / "last.pt").read_bytes() == first
    report = train(tiny_config(tiny_data_dir, run, epochs=2, seed=1, overwrite=True))
    assert report["epochs"] == 2 and load_checkpoint(run / "last.pt")["config"]["seed"] == 1
    assert [r["epoch"] for r in load_checkpoint(run / "last.pt")["state"]["history"]] == [1, 2]


def test_a_run_dir_in_use_by_a_live_run_is_refused(tiny_data_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main(tiny_config(tiny_data_dir, run)) == 2
        assert "another training run is using" in capsys.readouterr().err
        assert list(run.iterdir()) == []
    finally:
        os.close(fd)


def test_resume_without_options_continues_the_run_as_it_was(tiny_data_dir: Path, tmp_path: Path) -> None:
    flags = ["--data_dir", tiny_data_dir, "--epochs", 4, "--augment", "--batch_size", 8, *TINY_FLAGS[1:]]
    train(cli(*flags, "--ckpt_dir", tmp_path / "whole"))
    assert train(cli(*flags, "--ckpt_dir", tmp_path / "split", "--stop_after_epoch", 2)) is None
    report = train(cli("--data_dir", tiny_data_dir, "--ckpt_dir", tmp_path / "split",
                       "--resume", tmp_path / "split" / "last.pt", "--threads=1"))  # threads change the sums
    assert report["epochs"] == 4 and report["config"]["batch_size"] == 8 and report["config"]["augment"]
    whole, split = (load_checkpoint(tmp_path / name / "last.pt") for name in ("whole", "split"))
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, split["model"][name]), name
    assert history_lrs(tmp_path / "whole") == history_lrs(tmp_path / "split")


def test_epochs_past_the_schedule_are_refused_naming_the_fix(tiny_data_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, epochs=2))
    assert main(tiny_config(tiny_data_dir, run, epochs=4, resume=str(run / "last.pt"))) == 2
    error = capsys.readouterr().err
    assert "--epochs 4 runs past the 2-epoch one-cycle schedule" in error and "--schedule_epochs 4" in error
    assert main(tiny_config(tiny_data_dir, run, resume=str(run / "last.pt"), epochs=None)) == 2
    assert "already finished its epochs (epoch 2)" in capsys.readouterr().err


def make_stage(source: Path, dest: Path, rows: np.ndarray, until: int, schedule: int) -> Path:
    """A PDD stage data dir as pdd_folder_generator.py writes it: a train subset, the plan in meta.json."""
    dest.mkdir()
    meta = json.loads((source / "meta.json").read_text())
    for split in ("train", "val", "test"):
        for kind in ("X", "y"):
            array = np.load(source / f"{kind}_{split}.npy")
            np.save(dest / f"{kind}_{split}.npy", array[rows] if split == "train" else array)
    meta.update(fingerprint=fingerprint_arrays(dest), counts={"train": len(rows)},
                pdd={"train_until_epoch": until, "schedule_epochs": schedule, "source_data_dir": str(source),
                     "source_fingerprint": meta["fingerprint"]["dataset"]})
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def test_stages_continue_one_schedule_even_with_epochs_given(tiny_data_dir: Path, tmp_path: Path) -> None:
    half, rows = tmp_path / "stage1", np.arange(48)
    make_stage(tiny_data_dir, half, rows, until=1, schedule=3)
    whole = make_stage(tiny_data_dir, tmp_path / "stage2", np.arange(96), until=3, schedule=3)
    s1 = train(cli("--data_dir", half, "--ckpt_dir", tmp_path / "s1", *TINY_FLAGS))
    assert s1["effective_epochs"] == pytest.approx(0.5)  # 48 of the source's 96 train records
    s2 = train(cli("--data_dir", whole, "--ckpt_dir", tmp_path / "s2", "--resume", tmp_path / "s1" / "last.pt",
                   "--epochs", 2))
    lrs = history_lrs(tmp_path / "s2")
    batches = [3, 6]  # 48 then 96 records in batches of 16
    assert lrs == pytest.approx([one_cycle_lr((e + (n - 1) / n) / 3, TINY_TRAIN["lr"]) for e, n in enumerate(batches)])
    assert s2["effective_epochs"] == pytest.approx(1.5)


def test_a_report_lost_to_an_interruption_is_written_on_resume(tiny_data_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"

    def killed(*args: object) -> dict:
        raise SystemExit(143)

    with monkeypatch.context() as patch:
        patch.setattr(common.train, "final_report", killed)
        with pytest.raises(SystemExit):
            train(tiny_config(tiny_data_dir, run, epochs=2))
    assert not (run / "metrics.json").exists()
    report = train(tiny_config(tiny_data_dir, run, epochs=None, resume=str(run / "last.pt")))
    assert report["epochs"] == 2 and (run / "metrics.json").is_file()
    assert len(load_checkpoint(run / "last.pt")["state"]["history"]) == 2


def test_mid_epoch_resume_with_another_batch_size_is_refused(tiny_data_dir: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, stop_after_epoch=1))
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["state"].update(batches_done=2, epoch_samples=32, epoch_loss_sum=20.0, partition=(16, 1))
    save_checkpoint(ckpt, run / "last.pt")
    assert main(tiny_config(tiny_data_dir, run, batch_size=8, resume=str(run / "last.pt"))) == 2
    error = capsys.readouterr().err
    assert "in the middle of epoch 2, after 2 batches of 16 records on 1 process(es)" in error
    assert "--batch_size 16" in error


def test_processes_draw_different_dropout_masks_from_the_same_weights() -> None:
    masks = []
    for rank in (0, 1):
        seed_process(0, rank)
        masks.append(torch.nn.functional.dropout(torch.ones(1000), 0.5))
    assert not torch.equal(*masks)
    seed_process(0, 1)
    assert torch.equal(torch.nn.functional.dropout(torch.ones(1000), 0.5), masks[1])


def test_ddp_shards_are_disjoint_and_cover_the_rows() -> None:
    rows = np.random.default_rng(0).permutation(103)
    shards = [np.concatenate(epoch_batches(rows, 8, Dist(torch.device("cpu"), rank, 3))) for rank in range(3)]
    assert sum(map(len, shards)) == 102 and len(set(np.concatenate(shards))) == 102
    assert all(len(shard) == 34 for shard in shards)


@pytest.mark.parametrize("flag, value", [("epochs", 0), ("batch_size", 0), ("schedule_epochs", 0),
                                         ("stop_after_epoch", 0)])
def test_impossible_values_are_refused_not_replaced(tiny_data_dir: Path, tmp_path: Path, flag: str, value: int,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(tiny_config(tiny_data_dir, tmp_path / "run", **{flag: value})) == 2
    assert f"--{flag} must be >= 1, got 0" in capsys.readouterr().err and not (tmp_path / "run").exists()


def bad_checkpoints(folder: Path) -> dict[str, Path]:
    """Files that are not checkpoints of ours, each written under a telling name."""
    folder.mkdir()
    good = folder / "good.pt"
    torch.save({"a": torch.zeros(3)}, folder / "state_dict.pt")
    torch.save({"weights": torch.zeros(3)}, good)
    files = {"empty": b"", "text": b"hello\n", "random": np.random.default_rng(0).bytes(4096),
             "truncated": good.read_bytes()[:200]}
    for name, content in files.items():
        (folder / f"{name}.pt").write_bytes(content)

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo should never run",))

    torch.save({"model": Payload()}, folder / "code.pt")
    return {name: folder / f"{name}.pt" for name in [*files, "state_dict", "code"]}


@pytest.mark.parametrize("option", ["resume", "init_from"])
def test_bad_checkpoints_get_one_line_naming_the_file(tiny_data_dir: Path, tmp_path: Path, option: str,
                                                      capsys: pytest.CaptureFixture) -> None:
    for name, path in bad_checkpoints(tmp_path / "bad").items():
        assert main(tiny_config(tiny_data_dir, tmp_path / "run", **{option: str(path)})) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kill_at", ["start-up", "first checkpoint", "third checkpoint"])
def test_kill_9_then_the_same_command_completes_the_run(tiny_data_dir: Path, tmp_path: Path, kill_at: str) -> None:
    run, epochs = tmp_path / "run", 8
    command = [sys.executable, "train_1d_baseline.py", "--data_dir", str(tiny_data_dir), "--ckpt_dir", str(run),
               "--epochs", str(epochs), "--augment", *TINY_FLAGS]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    if kill_at == "start-up":
        time.sleep(1.0)
    else:
        wanted = 1 if kill_at == "first checkpoint" else 3
        while time.time() < deadline and not (
                (run / "history.csv").is_file() and len((run / "history.csv").read_text().splitlines()) > wanted):
            time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (run / "metrics.json").exists()
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    train(tiny_config(tiny_data_dir, tmp_path / "whole", epochs=epochs, augment=True))
    whole, resumed = (load_checkpoint(d / "last.pt") for d in (tmp_path / "whole", run))
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert [r["epoch"] for r in resumed["state"]["history"]] == list(range(1, epochs + 1))
    assert (run / "metrics.json").is_file() and not list(run.glob(".*"))
