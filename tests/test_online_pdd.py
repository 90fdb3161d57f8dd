"""Online PDD (common/online_pdd.py): DBPD keeps exactly a batch's hard records, SRD follows gamma, SMRD a DBPD
run's counts, revision uses all rows, the counts add up, resume is exact; the experiment runner end to end."""
from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

from common.checkpoint import load_checkpoint
from common.datadir import write_json_atomic
from common.distributed import Dist
from common.errors import ConfigError
from common.metrics import write_history_csv
from common.model import build_model
from common.online_pdd import Plan, RecordScores, record_losses, scoring_logits, srd_count, true_label_prob
from common.step import Step, StopFlag, TrainState, train_epoch
from common.train import train
from conftest import TINY_TRAIN, history_rows, tiny_train_config, with_preprocess_meta
from experiments import pdd_experiment


def column(run_dir: Path, name: str) -> list[int]:
    return [int(row[name]) for row in history_rows(run_dir)]


def fit_one_batch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, threshold: float,
                  seen: list[torch.Tensor]) -> TrainState:
    """train_epoch on a single batch with DBPD, recording the inputs of forward passes that build a graph."""
    model.register_forward_hook(lambda m, args, out: seen.append(args[0]) if torch.is_grad_enabled() else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = TrainState()
    step = Step(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), None, True, Dist(torch.device("cpu")))
    train_epoch(step, [(0, x, y)], lambda b: 1e-3, StopFlag(), state, tqdm(disable=True), threshold)
    return state


def test_true_label_prob_single_and_multi_label() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    single = true_label_prob(logits, torch.tensor([0, 2]), multilabel=False)
    assert torch.allclose(single, torch.tensor([np.exp(2) / (np.exp(2) + 1 + np.exp(-1)), 1 / 3]).float())
    multi = true_label_prob(logits, torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), multilabel=True)
    sigmoid = 1 / (1 + np.exp(-np.array([2.0, 0.0, -1.0])))
    assert torch.allclose(multi, torch.tensor([min(sigmoid[0], 1 - sigmoid[1], 1 - sigmoid[2]), 0.5]).float())


def test_dbpd_backpropagates_exactly_the_hard_records_of_a_batch() -> None:
    torch.manual_seed(0)
    model = build_model(n_classes=3, width=8, stages=2, blocks=1, kernel_size=5).train()
    x, y = torch.randn(16, 12, 100), (torch.rand(16, 3) < 0.4).float()
    with torch.no_grad():
        p = torch.sigmoid(copy.deepcopy(model)(x)).numpy()
    by_hand = [min(p[i, k] if y[i, k] else 1 - p[i, k] for k in range(3)) for i in range(16)]
    threshold = float(np.median(by_hand))
    hard = [i for i in range(16) if by_hand[i] < threshold]
    assert 0 < len(hard) < 16
    seen: list[torch.Tensor] = []
    state = fit_one_batch(model, x, y, threshold, seen)
    assert len(seen) == 1 and torch.equal(seen[0], x[hard])
    assert state.samples_backpropagated == len(hard) and state.scoring_forward_samples == 16


def test_a_batch_easy_at_the_threshold_back_propagates_nothing_and_scoring_changes_no_buffer() -> None:
    torch.manual_seed(0)
    model = build_model(n_classes=3, width=8, stages=2, blocks=1, kernel_size=5).train()
    x, y = torch.randn(8, 12, 100), (torch.rand(8, 3) < 0.4).float()
    with torch.no_grad():
        p = torch.sigmoid(copy.deepcopy(model)(x)).numpy()
    by_hand = np.array([min(p[i, k] if y[i, k] else 1 - p[i, k] for k in range(3)) for i in range(8)])
    lowest, second = np.sort(by_hand)[:2]
    assert 0.1 < lowest < second  # thresholds near the batch's own probabilities, not a bound no record can miss
    one_hard: list[torch.Tensor] = []
    fit_one_batch(copy.deepcopy(model), x, y, float(lowest + second) / 2, one_hard)
    assert len(one_hard) == 1 and torch.equal(one_hard[0], x[[int(np.argmin(by_hand))]])
    before = copy.deepcopy(model.state_dict())
    assert torch.equal(scoring_logits(model, x, None), copy.deepcopy(model)(x).detach())
    seen: list[torch.Tensor] = []
    state = fit_one_batch(model, x, y, float(lowest) * 0.999, seen)
    assert seen == [] and state.samples_backpropagated == 0 and state.scoring_forward_samples == 8
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in before.items())


def test_srd_counts_and_revision_epochs() -> None:
    assert [srd_count(1000, 0.9, e) for e in range(5)] == [1000, 900, 810, 729, 657]
    plan = Plan(mode="srd", epochs=6, revision=2, gamma=0.5)
    assert [plan.rows(e, 96) for e in range(6)] == [96, 48, 24, 12, 96, 96]
    assert [plan.revising(e) for e in range(6)] == [False] * 4 + [True] * 2
    dbpd = Plan(mode="dbpd", epochs=6, revision=2, threshold=0.6)
    assert [dbpd.batch_threshold(e) for e in range(6)] == [0.6] * 4 + [None] * 2
    assert [dbpd.rows(e, 96) for e in range(6)] == [96] * 6


def test_infobatch_leaves_out_a_ratio_of_the_below_mean_records_and_weights_the_rest() -> None:
    last = np.random.default_rng(0).random(10_000).astype(np.float32)
    last[:100] = np.nan  # never trained: hard, always kept
    plan = Plan(mode="infobatch", epochs=8, revision=1, ratio=0.3)
    rows = np.random.default_rng(1).permutation(10_000)
    kept, weights = plan.select(2, rows, last, seed=0)
    well = last < np.nanmean(last)
    dropped = np.setdiff1d(rows, kept)
    assert well[dropped].all() and np.isin(np.flatnonzero(np.isnan(last)), kept).all()
    assert abs(len(dropped) / well.sum() - 0.3) < 0.02
    assert np.array_equal(kept, rows[np.isin(rows, kept)])  # the epoch's order is kept
    assert np.allclose(weights, np.where(well[kept], 1 / 0.7, 1.0))
    again, _ = plan.select(2, rows, last, seed=0)
    assert np.array_equal(again, kept) and not np.array_equal(plan.select(3, rows, last, seed=0)[0], kept)
    full, ones = plan.select(7, rows, last, seed=0)  # the revision epoch
    assert np.array_equal(full, rows) and (ones == 1).all()


def test_dbpd_on_last_scores_drops_learnt_records_which_come_back_when_found_hard() -> None:
    plan = Plan(mode="dbpd", epochs=20, revision=2, threshold=0.7, scores="last", readmit=0.25)
    assert plan.tracks_records and plan.batch_threshold(0) is None and plan.rows(0, 4) == 4
    scores = RecordScores(4, plan, multilabel=True)
    scores.last[:] = [np.nan, 0.2, 0.9, 0.95]  # never trained, hard, learnt, learnt
    admitted = []
    for epoch in range(12):
        kept, _ = plan.select(epoch, np.arange(4), scores.last, seed=0)
        assert {0, 1} <= set(kept.tolist())
        admitted.append(2 in kept)
    assert 0 < sum(admitted) < 12  # a learnt record is re-admitted now and then, at random
    comes_back = admitted.index(True)
    kept, weights = plan.select(comes_back, np.arange(4), scores.last, seed=0)
    scores.start_epoch([kept], kept, weights)
    logits = torch.full((len(kept), 1), 3.0)  # record 2 now predicted wrong with p = sigmoid(3) for a 0 label
    loss = scores.loss(0, logits, torch.zeros(len(kept), 1))
    assert torch.isclose(loss, record_losses(logits, torch.zeros(len(kept), 1), True).mean())
    scores.end_epoch()
    assert scores.last[2] < 0.7 and np.isnan(scores.fresh).all()
    assert all(2 in plan.select(e, np.arange(4), scores.last, seed=0)[0] for e in range(comes_back + 1, 18))


def test_record_scores_weight_the_loss_and_keep_losses_for_infobatch() -> None:
    plan = Plan(mode="infobatch", epochs=4, revision=1, ratio=0.5)
    scores = RecordScores(5, plan, multilabel=True)
    scores.start_epoch([np.array([3, 1]), np.array([4])], np.array([3, 1, 4]), np.array([2.0, 1.0, 2.0]))
    logits, y = torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    per = record_losses(logits, y, True)
    assert torch.isclose(scores.loss(0, logits, y), (per * torch.tensor([2.0, 1.0])).mean())
    scores.fetch()
    assert np.allclose(scores.fresh[[3, 1]], per.numpy()) and np.isnan(scores.last).all()
    restored = RecordScores(5, plan, multilabel=True)
    restored.load_state_dict(scores.state_dict())
    assert np.array_equal(restored.fresh, scores.fresh, equal_nan=True)


def test_scoring_pass_may_update_batchnorm_statistics_as_the_papers_code_does() -> None:
    torch.manual_seed(0)
    model = build_model(n_classes=3, width=8, stages=2, blocks=1, kernel_size=5).train()
    before = copy.deepcopy(model.state_dict())
    scoring_logits(model, torch.randn(8, 12, 100), None, restore_bn=False)
    assert any(not torch.equal(value, model.state_dict()[name]) for name, value in before.items())


def test_infobatch_run_prunes_then_trains_on_all_and_no_scoring_pass(tiny_data_dir: Path, tmp_path: Path) -> None:
    report = train(tiny_train_config(tiny_data_dir, tmp_path / "ib", pdd="infobatch", pdd_delta=0.75))
    kept = column(tmp_path / "ib", "epoch_backpropagated")
    assert kept[0] == 96 and all(k < 96 for k in kept[1:3]) and kept[3] == 96  # first: no losses known yet
    assert report["scoring_forward_samples"] == 0 and report["samples_backpropagated"] == sum(kept)
    assert report["pdd"]["mode"] == "infobatch" and report["pdd"]["revision"] == 1
    scores = load_checkpoint(tmp_path / "ib" / "last.pt")["record_scores"]
    assert not torch.isnan(scores["last"]).any() and torch.isnan(scores["fresh"]).all()


@pytest.mark.parametrize("options, message", [
    (dict(pdd="infobatch", pdd_match="x"), "--pdd_match is for --pdd smrd only; drop it from --pdd infobatch"),
    (dict(pdd="infobatch", pdd_ratio=1.0), "--pdd_ratio must be in [0, 1)"),
    (dict(pdd="infobatch"), "--pdd_delta 0.875 leaves no full-data epoch in 4 epochs"),
    (dict(pdd="dbpd", pdd_scores="stale"), "--pdd_scores must be one of fresh, last"),
])
def test_pdd_options_that_make_no_sense_are_refused(tiny_data_dir: Path, tmp_path: Path, options: dict,
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train(tiny_train_config(tiny_data_dir, tmp_path / "run", **options))


def test_the_pdd_delta_an_infobatch_refusal_suggests_leaves_a_full_data_epoch(tiny_data_dir: Path,
                                                                             tmp_path: Path) -> None:
    """4 epochs at delta 0.875: round(4 * 0.125) = round(0.5) = 0 full-data epochs; the message once suggested 0.875
    itself, and now 0.75, which leaves round(4 * 0.25) = 1."""
    with pytest.raises(ConfigError, match=r"lower --pdd_delta to at most 0\.75 or train more epochs"):
        train(tiny_train_config(tiny_data_dir, tmp_path / "refused", pdd="infobatch"))
    train(tiny_train_config(tiny_data_dir, tmp_path / "run", pdd="infobatch", pdd_delta=0.75))
    assert column(tmp_path / "run", "epoch_backpropagated")[-1] == 96


def test_srd_run_keeps_gamma_fractions_then_revises_on_all(tiny_data_dir: Path, tmp_path: Path) -> None:
    report = train(tiny_train_config(tiny_data_dir, tmp_path / "srd", pdd="srd", pdd_gamma=0.5, revision_frac=0.25))
    assert column(tmp_path / "srd", "epoch_backpropagated") == [96, 48, 24, 96]
    assert column(tmp_path / "srd", "samples_backpropagated") == [96, 144, 168, 264]
    assert report["samples_backpropagated"] == 264 and report["effective_epochs"] == 264 / 96
    assert report["scoring_forward_samples"] == 0 and report["pdd"]["revision"] == 1


def test_dbpd_run_counts_add_up(tiny_data_dir: Path, tmp_path: Path) -> None:
    report = train(tiny_train_config(tiny_data_dir, tmp_path / "dbpd", pdd="dbpd", pdd_threshold=0.6,
                                     revision_frac=0.25))
    kept = column(tmp_path / "dbpd", "epoch_backpropagated")
    assert kept[-1] == 96 and all(0 <= k <= 96 for k in kept) and sum(kept[:-1]) < 3 * 96
    assert column(tmp_path / "dbpd", "samples_backpropagated") == np.cumsum(kept).tolist()
    assert column(tmp_path / "dbpd", "scoring_forward_samples") == [96, 192, 288, 288]
    metrics = json.loads((tmp_path / "dbpd" / "metrics.json").read_text())
    assert metrics["samples_backpropagated"] == sum(kept) == report["samples_backpropagated"]
    assert metrics["scoring_forward_samples"] == 288 and metrics["effective_epochs"] == sum(kept) / 96
    assert metrics["pdd"]["mode"] == "dbpd" and load_checkpoint(tmp_path / "dbpd" / "last.pt")["config"]["pdd"] == "dbpd"


def fake_dbpd_run(run_dir: Path, kept: list[int], train_records: int = 96) -> Path:
    run_dir.mkdir(parents=True)
    write_json_atomic(run_dir / "metrics.json", {"pdd": {"mode": "dbpd"}})
    write_history_csv(run_dir / "history.csv", [{"epoch": e + 1, "epoch_backpropagated": k,
                                                  "train_records": train_records} for e, k in enumerate(kept)])
    return run_dir


def test_smrd_keeps_the_dbpd_runs_counts(tiny_data_dir: Path, tmp_path: Path) -> None:
    match = fake_dbpd_run(tmp_path / "dbpd", [50, 30, 0, 96])
    report = train(tiny_train_config(tiny_data_dir, tmp_path / "smrd", pdd="smrd", pdd_match=str(match),
                                     revision_frac=0.25))
    assert column(tmp_path / "smrd", "epoch_backpropagated") == [50, 30, 0, 96]
    assert report["samples_backpropagated"] == 176 and report["scoring_forward_samples"] == 0


@pytest.mark.parametrize("problem", ["missing", "not dbpd", "other data", "too short"])
def test_smrd_refuses_a_run_dir_that_does_not_match(tiny_data_dir: Path, tmp_path: Path, problem: str) -> None:
    match = tmp_path / "dbpd"
    if problem != "missing":
        fake_dbpd_run(match, [50, 30, 0, 96] if problem != "too short" else [50, 30],
                      train_records=95 if problem == "other data" else 96)
    if problem == "not dbpd":
        write_json_atomic(match / "metrics.json", {"pdd": {"mode": "srd"}})
    with pytest.raises(ConfigError, match="pass --pdd_match the run dir of a finished --pdd dbpd run"):
        train(tiny_train_config(tiny_data_dir, tmp_path / "smrd", pdd="smrd", pdd_match=str(match)))
    with pytest.raises(ConfigError, match="--pdd smrd needs --pdd_match"):
        train(tiny_train_config(tiny_data_dir, tmp_path / "smrd", pdd="smrd"))


@pytest.mark.parametrize("options", [dict(pdd="srd", pdd_gamma=0.6), dict(pdd="dbpd", pdd_threshold=0.6),
                                     dict(pdd="infobatch", pdd_delta=0.75),
                                     dict(pdd="dbpd", pdd_scores="last", pdd_threshold=0.6, pdd_readmit=0.3)])
@pytest.mark.slow
def test_two_plus_two_epochs_equal_four(tiny_data_dir: Path, tmp_path: Path, options: dict) -> None:
    train(tiny_train_config(tiny_data_dir, tmp_path / "full", **options))
    assert train(tiny_train_config(tiny_data_dir, tmp_path / "split", stop_after_epoch=2, **options)) is None
    train(tiny_train_config(tiny_data_dir, tmp_path / "split", resume=str(tmp_path / "split" / "last.pt"), **options))
    full, split = (load_checkpoint(tmp_path / run / "last.pt") for run in ("full", "split"))
    assert all(torch.equal(tensor, split["model"][name]) for name, tensor in full["model"].items())
    for key in ("epoch", "samples_backpropagated", "scoring_forward_samples"):
        assert full["state"][key] == split["state"][key]
    for name in ("val_loss", "epoch_backpropagated", "scoring_forward_samples"):
        assert [r[name] for r in history_rows(tmp_path / "full")] == [r[name] for r in history_rows(tmp_path / "split")]


@pytest.mark.slow
def test_experiment_runner_end_to_end_and_rerun_skips(tiny_data_dir: Path, tmp_path: Path, capsys) -> None:
    data, out = with_preprocess_meta(tiny_data_dir), tmp_path / "experiment"
    variants = ["baseline", "staged", "dbpd", "srd", "smrd", "infobatch", "dbpd_last", "budget"]
    argv = ["--data_dir", str(data), "--out_dir", str(out), "--seeds", "0", "--epochs", "3",
            *[f"--{k}={v}" for k, v in TINY_TRAIN.items()], "--revision_frac", "0.34", "--pdd_delta", "0.66",
            "--variants", *variants]
    markdown = pdd_experiment.main(argv)
    for variant in variants[:-1]:
        assert f"| {variant} |" in markdown
    with open(out / "results.csv", newline="") as f:
        rows = {row["variant"]: row for row in csv.DictReader(f)}
    baseline = json.loads((out / "baseline" / "seed0" / "metrics.json").read_text())
    stage3 = json.loads((out / "staged" / "seed0" / "stage3" / "metrics.json").read_text())
    assert int(rows["staged"]["samples_backpropagated"]) == \
        stage3["samples_backpropagated"] + baseline["samples_backpropagated"]
    assert int(rows["staged"]["scoring_forward_samples"]) == 96 * 3  # 4 s records, 2 s windows every 1 s
    assert float(rows["baseline"]["effective_epochs"]) == 3 and float(rows["dbpd"]["scoring_epochs"]) == 2
    assert int(rows["dbpd"]["forward_samples"]) == int(rows["dbpd"]["samples_backpropagated"]) + 2 * 96
    assert column(out / "smrd" / "seed0", "epoch_backpropagated") == \
        column(out / "dbpd" / "seed0", "epoch_backpropagated")
    # every PDD run has a budget-matched baseline: the plain recipe for as many epochs as it back-propagated
    for variant in variants[2:-1]:
        epochs = min(max(1, round(int(rows[variant]["samples_backpropagated"]) / 96)), 2)
        budget = json.loads((out / "budget" / f"epochs{epochs}" / "seed0" / "metrics.json").read_text())
        assert budget["epochs"] == epochs and budget["config"]["pdd"] == "none" and f"budget{epochs}" in rows
        assert load_checkpoint(out / "budget" / f"epochs{epochs}" / "seed0" / "last.pt")["schedule_epochs"] == epochs
        point = float(rows[variant]["diff_vs_budget"])
        assert point == pytest.approx(float(rows[variant]["test_macro_auc"]) - budget["test"]["macro_auc"], abs=1e-6)
    point = float(rows["infobatch"]["diff_vs_baseline"])
    assert point == pytest.approx(float(rows["infobatch"]["test_macro_auc"]) - float(rows["baseline"]["test_macro_auc"]),
                                  abs=1e-6)
    assert rows["baseline"]["diff_vs_baseline"] == "" and "Goal (" in markdown
    assert (out / "auc_vs_compute.png").stat().st_size > 1000 and (out / "results.md").is_file()
    assert not (data / "difficulty.npy").exists()
    capsys.readouterr()
    assert pdd_experiment.main(argv) == markdown
    finished = capsys.readouterr().out.count("finished earlier")
    assert finished == 9 + len({p.parent for p in (out / "budget").glob("*/seed0")})  # 3 stages, 6 runs, budgets
