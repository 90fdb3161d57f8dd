"""Training runs are never lost or mixed up: run-dir claims, resume semantics, schedules, bad checkpoints,
interrupted reports, per-rank seeds (issue 8), on tiny synthetic data."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import common.train
from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import TrainConfig
from common.datadir import fingerprint_arrays
from common.distributed import Dist
from common.locks import try_lock
from common.loop import epoch_batches, one_cycle_lr
from common.run import seed_process
from common.train import train
from conftest import ROOT, TINY_TRAIN, TINY_TRAIN_FLAGS, kill_when, tiny_train_config, train_exit_code
from train_1d_baseline import parse_command

TINY_FLAGS = TINY_TRAIN_FLAGS
tiny_config = partial(tiny_train_config, epochs=3)


def cli(*args: object) -> TrainConfig:
    """The config train_1d_baseline.py builds from these flags (with given options recorded)."""
    return parse_command([str(a) for a in args])[0]


def history_lrs(run: Path) -> list[float]:
    return [row["lr"] for row in load_checkpoint(run / "last.pt")["state"]["history"]]


def test_a_run_dir_holding_another_run_is_refused_unless_overwrite(tiny_data_dir: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, epochs=1))
    first = (run / "last.pt").read_bytes()
    assert train_exit_code(tiny_config(tiny_data_dir, run, epochs=2, seed=1)) == 2
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
    lock = try_lock(run)
    try:
        assert train_exit_code(tiny_config(tiny_data_dir, run)) == 2
        assert "another training run is using" in capsys.readouterr().err
        assert list(run.iterdir()) == []
    finally:
        lock.release()


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
    assert train_exit_code(tiny_config(tiny_data_dir, run, epochs=4, resume=str(run / "last.pt"))) == 2
    error = capsys.readouterr().err
    assert "--epochs 4 runs past the 2-epoch one-cycle schedule" in error and "--schedule_epochs 4" in error
    assert train_exit_code(tiny_config(tiny_data_dir, run, resume=str(run / "last.pt"), epochs=None)) == 2
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
    assert train_exit_code(tiny_config(tiny_data_dir, run, batch_size=8, resume=str(run / "last.pt"))) == 2
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
    assert train_exit_code(tiny_config(tiny_data_dir, tmp_path / "run", **{flag: value})) == 2
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
        assert train_exit_code(tiny_config(tiny_data_dir, tmp_path / "run", **{option: str(path)})) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}") and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["start-up", "first checkpoint", "third checkpoint"])
@pytest.mark.posix_signals
def test_kill_9_then_the_same_command_completes_the_run(tiny_data_dir: Path, tmp_path: Path, kill_at: str) -> None:
    run, epochs = tmp_path / "run", 8
    command = [sys.executable, "train_1d_baseline.py", "--data_dir", str(tiny_data_dir), "--ckpt_dir", str(run),
               "--epochs", str(epochs), "--augment", *TINY_FLAGS]
    epochs_done = {"start-up": 0, "first checkpoint": 1, "third checkpoint": 3}[kill_at]

    def reached() -> bool:  # start-up: the run dir claimed, no checkpoint yet; else that many history rows
        if epochs_done == 0:
            return run.is_dir()
        history = run / "history.csv"
        return history.is_file() and len(history.read_text().splitlines()) > epochs_done

    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_when(proc, reached, f"the run's {kill_at}")
    assert proc.returncode == -signal.SIGKILL and not (run / "metrics.json").exists()
    assert (run / "last.pt").exists() == (epochs_done > 0)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    train(tiny_config(tiny_data_dir, tmp_path / "whole", epochs=epochs, augment=True))
    whole, resumed = (load_checkpoint(d / "last.pt") for d in (tmp_path / "whole", run))
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert [r["epoch"] for r in resumed["state"]["history"]] == list(range(1, epochs + 1))
    assert (run / "metrics.json").is_file() and not list(run.glob(".*"))


def test_even_kernel_sizes_are_refused_naming_odd_ones(tiny_data_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train_exit_code(cli("--data_dir", tiny_data_dir, "--ckpt_dir", run, *TINY_FLAGS, "--kernel_size", 4)) == 2
    assert capsys.readouterr().err == ("error: --kernel_size must be odd (a same-padded convolution keeps the length "
                                       "only then), got 4; use 3, 5 or 7\n")
    assert not run.exists()


@pytest.mark.parametrize("flag, value", [("lr", "inf"), ("lr", "nan"), ("weight_decay", "inf"),
                                         ("window_seconds", "inf"), ("pdd_gamma", "nan")])
def test_float_options_must_be_finite(tiny_data_dir: Path, tmp_path: Path, flag: str, value: str,
                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train_exit_code(cli("--data_dir", tiny_data_dir, "--ckpt_dir", run, *TINY_FLAGS, f"--{flag}", value)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --{flag} must be a finite number, got {value}") and err.count("\n") == 1, err
    assert not run.exists()


def test_a_ckpt_dir_that_cannot_be_made_is_refused_in_one_line(tiny_data_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    for ckpt_dir in (blocker / "run", blocker):
        assert train_exit_code(cli("--data_dir", tiny_data_dir, "--ckpt_dir", ckpt_dir, *TINY_FLAGS)) == 2
        why = "is a file, not a folder" if ckpt_dir == blocker else f"runs through {blocker}, which is not a folder"
        assert capsys.readouterr().err == f"error: --ckpt_dir {ckpt_dir} {why}; choose another --ckpt_dir\n"
    assert blocker.read_text() == "not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "tiny_data"]


def read_only_at(path: Path) -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))


def test_a_ckpt_dir_on_a_read_only_filesystem_is_refused_before_training(tiny_data_dir: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """Tests run as root, whom chmod does not stop: the read-only filesystem is an EROFS raised at the write."""
    mount, existing = tmp_path / "ro", tmp_path / "ro" / "existing"
    existing.mkdir(parents=True)
    mkdir, temporary_file = Path.mkdir, tempfile.TemporaryFile

    def mkdir_read_only(self: Path, *args: object, **kwargs: object) -> None:
        if mount in self.parents and not self.exists():
            raise read_only_at(self)
        mkdir(self, *args, **kwargs)

    def write_read_only(*args: object, dir: str | None = None, **kwargs: object) -> object:
        if dir is not None and (Path(dir) == mount or mount in Path(dir).parents):
            raise read_only_at(Path(dir) / "tmpfile")
        return temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_read_only)
    monkeypatch.setattr(tempfile, "TemporaryFile", write_read_only)
    trained = []
    monkeypatch.setattr(common.train, "train_and_report", lambda *args: trained.append(1))
    for ckpt_dir in (mount / "new" / "run", existing):
        assert train_exit_code(cli("--data_dir", tiny_data_dir, "--ckpt_dir", ckpt_dir, *TINY_FLAGS)) == 2
        assert capsys.readouterr().err == (f"error: --ckpt_dir {ckpt_dir} cannot be written: Read-only file system "
                                           f"({ckpt_dir if ckpt_dir.exists() else mount}); choose another --ckpt_dir\n")
    assert trained == [] and not (mount / "new").exists() and list(existing.iterdir()) == []


def test_a_start_refused_after_claiming_the_run_dir_removes_only_the_folders_it_made(
        tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run, epochs=2))
    kept = tmp_path / "kept"
    kept.mkdir()
    for ckpt_dir in (tmp_path / "new" / "deeper", kept):
        assert train_exit_code(tiny_config(tiny_data_dir, ckpt_dir, epochs=None, resume=str(run / "last.pt"))) == 2
        assert f"{run / 'last.pt'} already finished its epochs (epoch 2)" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and kept.is_dir() and list(kept.iterdir()) == []


def test_a_truncated_meta_json_is_one_line_and_leaves_no_run_dir(tiny_data_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    meta = tiny_data_dir / "meta.json"
    meta.write_text(meta.read_text()[:50])
    run = tmp_path / "run"
    assert train_exit_code(cli("--data_dir", tiny_data_dir, "--ckpt_dir", run, *TINY_FLAGS)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {meta} is not valid JSON (") and err.count("\n") == 1, err
    assert err.endswith(f"; re-run preprocess.py for {tiny_data_dir}\n") and not run.exists()


def test_a_finished_run_names_the_flags_that_train_it_further_and_they_do(tiny_data_dir: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run))
    resume = ["--data_dir", tiny_data_dir, "--ckpt_dir", tmp_path / "more", "--resume", run / "last.pt"]
    assert train_exit_code(cli(*resume)) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run / 'last.pt'} already finished its epochs (epoch 3); to train it further pass "
                   "--epochs E --schedule_epochs E with E above 3 (its one-cycle schedule ends at epoch 3), or start a "
                   "new run\n")
    report = train(cli(*resume, "--epochs", 5, "--schedule_epochs", 5))
    assert report["epochs"] == 5 and [r["epoch"] for r in load_checkpoint(tmp_path / "more" / "last.pt")["state"]
                                      ["history"]] == [1, 2, 3, 4, 5]


def test_a_run_stopped_early_is_not_sent_to_epochs_that_cannot_help(tiny_data_dir: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_data_dir, run))
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["state"].update(stopped_early=True, epoch=2)
    save_checkpoint(ckpt, run / "last.pt")
    assert train_exit_code(tiny_config(tiny_data_dir, run, epochs=None, resume=str(run / "last.pt"))) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {run / 'last.pt'} already stopped early by --patience (epoch 2); resume it into another "
                   "--ckpt_dir (a new best.pt and patience count), or start a new run\n")


def test_a_busy_run_dir_is_refused_without_claiming_to_continue_it(tiny_data_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train(tiny_config(tiny_data_dir, run, stop_after_epoch=1)) is None
    capsys.readouterr()
    lock = try_lock(run)
    try:
        assert train_exit_code(tiny_config(tiny_data_dir, run)) == 2
    finally:
        lock.release()
    out, err = capsys.readouterr()
    assert out == "" and err == (f"error: another training run is using {run}; wait for it to end or choose another "
                                 "--ckpt_dir\n")


def ensemble_dir(folder: Path) -> Path:
    """What train_1d_baseline.py --seeds leaves: member folders, the ensemble's metrics.json and roc_curves.png."""
    for seed in (0, 1):
        (folder / f"seed{seed}").mkdir(parents=True)
        (folder / f"seed{seed}" / "best.pt").write_bytes(b"member")
    (folder / "metrics.json").write_text('{"members": []}\n')
    (folder / "roc_curves.png").write_bytes(b"png")
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_single_run_into_an_ensemble_dir_is_refused(tiny_data_dir: Path, tmp_path: Path, overwrite: bool,
                                                      capsys: pytest.CaptureFixture) -> None:
    ens = ensemble_dir(tmp_path / "ens")
    before = sorted(str(p.relative_to(ens)) for p in ens.rglob("*"))
    assert train_exit_code(tiny_config(tiny_data_dir, ens, overwrite=overwrite)) == 2
    assert capsys.readouterr().err == (
        f"error: {ens} is an ensemble dir (seed0/, seed1/ of train_1d_baseline.py --seeds), not a single run's; "
        "choose another --ckpt_dir, continue the ensemble with --seeds, or remove the folder yourself to reuse its "
        "name (--overwrite does not remove ensemble members)\n")
    assert sorted(str(p.relative_to(ens)) for p in ens.rglob("*")) == before


def test_a_run_dir_without_last_pt_is_not_sent_to_resume_it(tiny_data_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{}\n")
    assert train_exit_code(tiny_config(tiny_data_dir, run)) == 2
    assert capsys.readouterr().err == (f"error: {run} holds another run (metrics.json); choose another --ckpt_dir, "
                                       "or pass --overwrite to replace it\n")


def test_model_options_on_resume_are_the_checkpoints_and_another_value_is_refused(
        tiny_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert train(cli("--data_dir", tiny_data_dir, "--ckpt_dir", run, "--epochs", 2, "--stop_after_epoch", 1,
                     *TINY_FLAGS)) is None
    resume = ["--data_dir", tiny_data_dir, "--ckpt_dir", run, "--resume", run / "last.pt"]
    assert train_exit_code(cli(*resume, "--width", 16, "--kernel_size", 5)) == 2
    assert capsys.readouterr().err == (
        f"error: {run / 'last.pt'} holds a model of --width 8, not the --width 16 given; a run started from a "
        "checkpoint keeps its model: drop --width, or start a new run without --resume/--init_from\n")
    report = train(cli(*resume))
    assert report["model_hparams"]["width"] == report["config"]["width"] == 8
    assert {name: report["config"][name] for name in ("stages", "blocks", "kernel_size")} == \
        {"stages": 2, "blocks": 1, "kernel_size": 5}


def with_split_id(data_dir: Path, split_id: str) -> Path:
    """Mark a data dir as a PDD stage cut from the easy/medium/hard split `split_id` (pdd_folder_generator.py)."""
    meta = json.loads((data_dir / "meta.json").read_text())
    meta["pdd"] = {"split_id": split_id, "train_until_epoch": 1, "schedule_epochs": 2}
    (data_dir / "meta.json").write_text(json.dumps(meta))
    return data_dir


def test_resuming_a_stage_of_one_pdd_split_on_a_stage_of_another_is_refused(tiny_make_data_dir, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    stage1 = with_split_id(tiny_make_data_dir("stage1"), "split-aaa")
    stage2 = with_split_id(tiny_make_data_dir("stage2", seed=1), "split-bbb")
    train(tiny_config(stage1, tmp_path / "s1", epochs=None))
    assert load_checkpoint(tmp_path / "s1" / "last.pt")["pdd_split_id"] == "split-aaa"
    s2 = tmp_path / "s2"
    assert train_exit_code(tiny_config(stage2, s2, epochs=2, resume=str(tmp_path / "s1" / "last.pt"))) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 's1' / 'last.pt'} was trained on a stage of PDD split split-aaa, but {stage2} is a "
        "stage of split split-bbb; rebuild all stages from one split with pdd_folder_generator.py, or start afresh "
        "without --resume\n")
    assert not s2.exists()
    with_split_id(stage2, "split-aaa")
    assert train(tiny_config(stage2, s2, epochs=2, resume=str(tmp_path / "s1" / "last.pt")))["epochs"] == 2
