"""Ensembles: one recipe trained with several seeds into one folder, scored by averaging the members' probabilities.

train_ensemble(cfg, seeds): every member is an ordinary run in <ckpt_dir>/seed<k> (common.runs: reused when it
finished with the same settings, resumed when it was interrupted, refused when other settings made it), so the same
command continues after a kill. Then every member's best.pt scores val and test, the probabilities are averaged as
predict.py averages several --ckpt (common.inference.score), per-class F1 thresholds are tuned on the ensemble's val
probabilities, and <ckpt_dir>/metrics.json is written like a single run's, plus a "members" entry; predict.py
--ckpt <ckpt_dir> uses the members and those thresholds.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from common.datadir import write_json_atomic
from common.files import portable_path
from common.device import resolve_device
from common.inference import load_members, score
from common.labels import one_hot
from common.metrics import format_summary, plot_roc_curves, summarise, tune_thresholds
from common.predictions import save_predictions
from common.config import TrainConfig, check_config, options
from common.errors import ConfigError
from common.runs import check_reusable, trained
from common.train import train
from common.traindata import load_data

SINGLE_RUN_FILES = ("last.pt", "best.pt", "history.csv")
SCORING_BATCH = 512


def member_dir(ckpt_dir: str | Path, seed: int) -> Path:
    """Where the member trained with `seed` lives."""
    return Path(ckpt_dir) / f"seed{seed}"


def member_config(cfg: TrainConfig, seed: int) -> TrainConfig:
    """The run config of one member: the ensemble's options with its own seed and run dir."""
    return replace(cfg, seed=seed, ckpt_dir=str(member_dir(cfg.ckpt_dir, seed)))


def check_ensemble(cfg: TrainConfig, seeds: list[int]) -> None:
    """Refuse what an ensemble cannot be, naming the fix: repeated or negative seeds, --seed beside --seeds,
    options that belong to one run, torchrun, and a --ckpt_dir that holds a single run."""
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct numbers >= 0, got {' '.join(map(str, seeds))}")
    given = set(cfg.given) if cfg.given is not None else set()
    if "seed" in given:
        raise ConfigError("--seed and --seeds both given: --seeds trains one member per seed; drop --seed")
    one_run = [f"--{name}" for name in options(one_run=True) if getattr(cfg, name) is not None]
    if one_run:
        raise ConfigError(f"{', '.join(one_run)} continue or start one run, not an ensemble: drop them (the same "
                          "--seeds command continues an interrupted ensemble by itself)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("--seeds under torchrun is not supported: run the command without torchrun, or train each "
                          f"member with torchrun and --seed k --ckpt_dir {Path(cfg.ckpt_dir) / 'seed<k>'}, "
                          "then run the --seeds command once without torchrun to evaluate them")
    check_config(cfg)
    ckpt_dir = Path(cfg.ckpt_dir)
    single = [name for name in SINGLE_RUN_FILES if (ckpt_dir / name).exists()]
    if single:
        raise ConfigError(f"{ckpt_dir} holds a single run ({', '.join(single)}), not an ensemble; choose another "
                          "--ckpt_dir")
    if not cfg.overwrite:
        for seed in seeds:
            check_reusable(member_config(cfg, seed), "this ensemble", "--ckpt_dir")


def train_members(cfg: TrainConfig, seeds: list[int]) -> list[dict]:
    """metrics.json of every member, training those not finished (all of them afresh with --overwrite)."""
    return [train(member_config(cfg, seed)) if cfg.overwrite
            else trained(member_config(cfg, seed), "this ensemble", "--ckpt_dir") for seed in seeds]


def evaluate_ensemble(cfg: TrainConfig, seeds: list[int], members_metrics: list[dict]) -> dict:
    """Score the members' best.pt on val and test, average, tune thresholds on val; write predictions.npz,
    metrics.json and roc_curves.png into ckpt_dir and return the report."""
    started = time.time()
    device = resolve_device(cfg.device)
    data = load_data(cfg.data_dir, cfg.window_seconds)
    paths = [member_dir(cfg.ckpt_dir, seed) / "best.pt" for seed in seeds]
    members = load_members(paths, device)
    val_probs, test_probs = (score(members, data.X[split], SCORING_BATCH, device) for split in ("val", "test"))
    thresholds = (tune_thresholds(val_probs, one_hot(data.y["val"], len(data.classes), True))
                  if data.multilabel else None)
    samples = sum(m["samples_backpropagated"] for m in members_metrics)
    train_seconds = sum(m["train_seconds"] for m in members_metrics)
    scoring_seconds = time.time() - started
    report = {
        "val": summarise(val_probs, data.y["val"], data.multilabel, data.classes, thresholds),
        "test": summarise(test_probs, data.y["test"], data.multilabel, data.classes, thresholds, intervals=True),
        "members": [{"seed": seed, "checkpoint": str(path.relative_to(cfg.ckpt_dir)), "best_epoch": m["best_epoch"],
                     "val_macro_auc": m["val"]["macro_auc"], "test_macro_auc": m["test"]["macro_auc"],
                     "wall_seconds": m["wall_seconds"], "train_seconds": m["train_seconds"]}
                    for seed, path, m in zip(seeds, paths, members_metrics)],
        "seeds": list(seeds), "epochs": members_metrics[0]["epochs"],
        "samples_backpropagated": samples, "effective_epochs": samples / data.full_train,
        "scoring_forward_samples": sum(m["scoring_forward_samples"] for m in members_metrics),
        "wall_seconds": round(sum(m["wall_seconds"] for m in members_metrics) + scoring_seconds, 1),
        "ensemble_scoring_seconds": round(scoring_seconds, 1), "train_seconds": round(train_seconds, 1),
        "samples_per_second": round(samples / max(train_seconds, 1e-9), 1),
        "n_params": sum(m["n_params"] for m in members_metrics), "model_hparams": members_metrics[0]["model_hparams"],
        "config": {**asdict(replace(cfg, seed=None)), "seeds": list(seeds)},
        "classes": data.classes, "task": data.task, "multilabel": data.multilabel, "input_shape": data.input_shape,
        "data_dir": portable_path(Path(cfg.data_dir), Path(cfg.ckpt_dir)), "data_fingerprint": data.fingerprint.get("dataset"),
        "ckpt_dir": str(cfg.ckpt_dir), "checkpoints": [str(p.relative_to(cfg.ckpt_dir)) for p in paths],
        "device": str(device), "torch_version": str(torch.__version__),
    }
    save_predictions(Path(cfg.ckpt_dir), {"val": val_probs, "test": test_probs}, data.record_ids)
    write_json_atomic(Path(cfg.ckpt_dir) / "metrics.json", report)
    plot_roc_curves(Path(cfg.ckpt_dir) / "roc_curves.png", test_probs, data.y["test"], data.multilabel, data.classes)
    return report


def train_ensemble(cfg: TrainConfig, seeds: list[int]) -> dict:
    """Train (or reuse, or continue) one member per seed, then evaluate their average; returns metrics.json's
    content, also printed as a summary."""
    check_ensemble(cfg, seeds)
    members_metrics = train_members(cfg, seeds)
    report = evaluate_ensemble(cfg, seeds, members_metrics)
    print(format_summary(report), flush=True)
    return report

