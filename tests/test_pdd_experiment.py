"""experiments/pdd_experiment.py: a finished or interrupted run is reused only when made with this experiment's
settings and data, else refused naming the difference before anything trains; bad checkpoints and inputs get one
line, exit 2, and no empty out_dir; killed at any point, the same command completes it with the table of an
uninterrupted run."""
import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.train import train
from conftest import ROOT, TINY_TRAIN, kill_when, run_repo_script, tiny_train_config, with_preprocess_meta
from experiments import pdd_experiment

pytestmark = pytest.mark.slow  # trains and re-scores whole runs: see pytest.ini

TINY_FLAGS = [f"--{k}={v}" for k, v in TINY_TRAIN.items() if k != "width"]


def experiment(data: Path, out: Path, *flags: str) -> list[str]:
    """The runner's command line for a tiny one-seed experiment."""
    return ["--data_dir", str(data), "--out_dir", str(out), "--seeds", "0", *TINY_FLAGS, *flags]


@pytest.fixture
def data(tiny_data_dir: Path) -> Path:
    """The tiny data dir with preprocess.py's meta.json entries."""
    return with_preprocess_meta(tiny_data_dir)


def test_a_finished_run_of_other_settings_is_refused_naming_the_difference(data, tmp_path, capsys):
    out = tmp_path / "exp"
    pdd_experiment.main(experiment(data, out, "--variants", "baseline", "--epochs", "3", "--width", "8"))
    metrics = (out / "baseline" / "seed0" / "metrics.json").read_bytes()
    result = run_repo_script("experiments/pdd_experiment.py",
                             *experiment(data, out, "--variants", "baseline", "dbpd", "--epochs", "6", "--width", "32"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {out / 'baseline' / 'seed0'} was trained with --epochs 3 --width 8 (metrics.json), this experiment "
        f"asks for --epochs 6 --width 32; use another --out_dir or remove {out / 'baseline' / 'seed0'}"]
    assert (out / "baseline" / "seed0" / "metrics.json").read_bytes() == metrics and not (out / "dbpd").exists()
    capsys.readouterr()
    pdd_experiment.main(experiment(data, out, "--variants", "baseline", "--epochs", "3", "--width", "8"))
    assert "finished earlier with these settings" in capsys.readouterr().out


def test_half_schedule_variants_train_half_the_epochs_with_their_settings(data, tmp_path):
    out = tmp_path / "exp"
    pdd_experiment.main(experiment(data, out, "--variants", "infobatch_half_r0.6", "dbpd_last_half", "--epochs", "5",
                                   "--width", "8", "--pdd_delta", "0.5"))
    infobatch = json.loads((out / "infobatch_half_r0.6" / "seed0" / "metrics.json").read_text())
    dbpd_last = json.loads((out / "dbpd_last_half" / "seed0" / "metrics.json").read_text())
    assert (infobatch["epochs"], infobatch["config"]["pdd"], infobatch["config"]["pdd_ratio"]) == (2, "infobatch", 0.6)
    assert (dbpd_last["epochs"], dbpd_last["config"]["pdd"], dbpd_last["config"]["pdd_scores"]) == (2, "dbpd", "last")
    assert not (out / "baseline").exists()


def test_an_interrupted_run_of_other_settings_is_refused_naming_its_last_pt(data, tmp_path):
    out = tmp_path / "exp"
    run_dir = out / "baseline" / "seed0"
    assert train(tiny_train_config(data, run_dir, epochs=3, stop_after_epoch=1)) is None  # last.pt, no metrics.json
    with pytest.raises(ConfigError, match=r"seed0 was trained with --lr 0.01 \(last.pt\), this experiment asks for "
                                          r"--lr 0.02"):
        pdd_experiment.main(experiment(data, out, "--variants", "baseline", "--epochs", "3", "--width", "8",
                                       "--lr", "0.02"))


def test_a_run_on_other_data_is_refused(data, tmp_path, tiny_make_data_dir):
    out = tmp_path / "exp"
    pdd_experiment.main(experiment(data, out, "--variants", "baseline", "--epochs", "3", "--width", "8"))
    other = with_preprocess_meta(tiny_make_data_dir("other", seed=1))
    with pytest.raises(ConfigError, match=f"seed0 was trained with other data .*asks for the data {other} holds now"):
        pdd_experiment.main(experiment(other, out, "--variants", "baseline", "--epochs", "3", "--width", "8"))


def test_staged_runs_and_data_of_other_settings_are_refused(data, tmp_path):
    out = tmp_path / "exp"
    pdd_experiment.main(experiment(data, out, "--variants", "staged", "--epochs", "3", "--width", "8"))
    shutil.rmtree(out / "baseline")
    other_lr = experiment(data, out, "--variants", "staged", "--epochs", "3", "--width", "8", "--lr", "0.02")
    with pytest.raises(ConfigError, match=f"{out / 'staged' / 'seed0' / 'stage1'} was trained with --lr 0.01"):
        pdd_experiment.main(other_lr)
    assert not (out / "baseline").exists()  # refused before anything was trained
    for k in (1, 2, 3):
        shutil.rmtree(out / "staged" / "seed0" / f"stage{k}")
    with pytest.raises(ConfigError, match=f"{out / 'staged' / 'seed0' / 'data'} was prepared by another baseline "
                                          f"best.pt; use another --out_dir or remove {out / 'staged' / 'seed0'}"):
        pdd_experiment.main(other_lr)  # the baseline is retrained with --lr 0.02; the stages were scored by the old
    assert json.loads((out / "staged" / "seed0" / "data" / "prepared.json").read_text())["stage_epochs"] == [1, 1, 1]


def test_a_corrupt_last_pt_in_out_dir_gets_one_line_and_exit_2(data, tmp_path):
    out = tmp_path / "exp"
    last = out / "baseline" / "seed0" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 truncated")
    result = run_repo_script("experiments/pdd_experiment.py", *experiment(data, out, "--variants", "baseline",
                                                                     "--epochs", "3"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and str(last) in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--seeds", "0", "-1"], "--seeds must be distinct numbers >= 0"),
    (["--seeds", "1", "1"], "--seeds must be distinct numbers >= 0"),
    (["--batch_size", "0"], "--batch_size must be >= 1, got 0"),
    (["--data_dir", "missing"], "missing/meta.json not found"),
    (["--variants", "baseline", "infobatch_half_r0.5", "--epochs", "2"],
     "--pdd_delta 0.875 leaves no full-data epoch in 1 epochs"),
])
def test_bad_input_exits_2_without_creating_out_dir(data, tmp_path, flags, message):
    out = tmp_path / "exp"
    result = run_repo_script("experiments/pdd_experiment.py", *experiment(data, out, "--variants", "baseline"), *flags,
                             cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


TIMING_COLUMNS = ("train_seconds", "wall_minutes", "load_5min_at_end")


def results_without_timings(out: Path) -> list[dict]:
    """results.csv of an experiment without its timing columns, run dirs relative to out."""
    with open(out / "results.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]
    return [{**row, "run_dir": Path(row["run_dir"]).relative_to(out).as_posix()} for row in rows]


@pytest.mark.parametrize("kill_in", ["infobatch/seed0", "budget/*/seed0"])
@pytest.mark.posix_signals
def test_kill_9_then_the_same_command_gives_the_uninterrupted_table(data, tmp_path, kill_in):
    flags = ("--variants", "baseline", "infobatch", "budget", "--epochs", "4", "--pdd_delta", "0.75")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "experiments/pdd_experiment.py", *experiment(data, out, *flags)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # progress bars would fill a pipe
    kill_when(proc, lambda: bool(list(out.glob(f"{kill_in}/history.csv"))), f"the experiment's {kill_in}")
    assert proc.returncode == -signal.SIGKILL and not (out / "results.csv").exists()
    rerun = run_repo_script("experiments/pdd_experiment.py", *experiment(data, out, *flags))
    assert rerun.returncode == 0, rerun.stderr
    pdd_experiment.main(experiment(data, tmp_path / "whole", *flags))
    whole = results_without_timings(tmp_path / "whole")
    assert results_without_timings(out) == whole and {r["variant"] for r in whole} >= {"baseline", "infobatch"}
