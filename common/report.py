"""The final report of a finished run: best.pt scored once on validation (F1 thresholds) and test, written as
metrics.json, training_curves.png and roc_curves.png."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from common.checkpoint import load_checkpoint
from common.datadir import write_json_atomic
from common.files import portable_path
from common.labels import one_hot
from common.metrics import plot_history, plot_roc_curves, summarise, tune_thresholds
from common.model import count_parameters
from common.predictions import save_predictions
from common.run import Run, unwrap


def final_report(run: Run) -> dict:
    """Score best.pt once: F1 thresholds tuned on validation, then test; write predictions.npz (what later
    comparisons read), metrics.json and the curve PNGs."""
    cfg, data, state, ckpt_dir = run.cfg, run.data, run.state, Path(run.cfg.ckpt_dir)
    unwrap(run.step.model).load_state_dict(load_checkpoint(ckpt_dir / "best.pt")["model"])
    val_probs, test_probs = run.score("val"), run.score("test")
    thresholds = (tune_thresholds(val_probs, one_hot(data.y["val"], len(data.classes), True))
                  if data.multilabel else None)
    best_row = next(row for row in state.history if row["epoch"] == state.best_epoch)
    report = {
        "val": summarise(val_probs, data.y["val"], data.multilabel, data.classes, thresholds),
        "test": summarise(test_probs, data.y["test"], data.multilabel, data.classes, thresholds, intervals=True),
        "best_epoch": state.best_epoch, "epochs": state.epoch,
        "samples_backpropagated": state.samples_backpropagated,
        "samples_backpropagated_at_best": best_row["samples_backpropagated"],
        "effective_epochs": state.samples_backpropagated / data.full_train,
        "scoring_forward_samples": state.scoring_forward_samples,
        "pdd": {**asdict(run.plan), "match": cfg.pdd_match, "revision_frac": cfg.revision_frac},
        "wall_seconds": round(run.elapsed(), 1), "train_seconds": round(state.train_seconds, 1),
        "samples_per_second": round(state.samples_backpropagated / max(state.train_seconds, 1e-9), 1),
        "n_params": count_parameters(run.step.model), "model_hparams": run.hparams, "config": asdict(cfg),
        "classes": data.classes, "task": data.task, "multilabel": data.multilabel, "input_shape": data.input_shape,
        "data_dir": portable_path(Path(cfg.data_dir), ckpt_dir), "data_fingerprint": data.fingerprint.get("dataset"),
        "started_from": run.source, "ckpt_dir": str(cfg.ckpt_dir), "checkpoint": str(ckpt_dir / "best.pt"),
        "world_size": run.dist.world_size, "device": str(run.dist.device), "torch_version": str(torch.__version__),
    }
    save_predictions(ckpt_dir, {"val": val_probs, "test": test_probs}, data.record_ids)
    write_json_atomic(ckpt_dir / "metrics.json", report)
    plot_history(ckpt_dir / "training_curves.png", state.history)
    plot_roc_curves(ckpt_dir / "roc_curves.png", test_probs, data.y["test"], data.multilabel, data.classes)
    return report
