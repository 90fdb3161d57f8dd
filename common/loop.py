"""The epoch loop: per epoch, choose the train rows (online PDD may take a subset), back-propagate them in batches
on the one-cycle schedule (common/step.py), score validation and write last.pt, best.pt and history.csv; stop early
on --patience, at --stop_after_epoch, or on a signal (saving a resumable last.pt)."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import copy_checkpoint, save_checkpoint
from common.data import TrainBatches, batch_stream
from common.distributed import Dist
from common.errors import TrainingInterrupted
from common.metrics import summarise, write_history_csv
from common.run import Run
from common.rundir import out_of_memory
from common.step import StopFlag, stop_on_signals, train_epoch


def one_cycle_lr(progress: float, peak: float, warmup: float = 0.3) -> float:
    """Learning rate at `progress` (fraction of the schedule, clamped to [0, 1]): cosine rise from peak/25 to
    peak over the first 30 %, cosine fall to peak/1e4 after (OneCycleLR's shape, as a pure function so that a
    resumed run, even on another train subset, lands on the same schedule without scheduler state)."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        start, end, t = peak / 25, peak, p / warmup
    else:
        start, end, t = peak, peak / 1e4, (p - warmup) / (1 - warmup)
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def epoch_rows(n_train: int, seed: int, epoch: int, keep: int | None = None) -> np.ndarray:
    """Train rows of `epoch`, in order: the first `keep` (default all) of a permutation seeded by (seed, epoch),
    so an online PDD subset is random, and the same when the epoch is resumed."""
    return np.random.default_rng([seed, epoch]).permutation(n_train)[:keep]


def epoch_batches(rows: np.ndarray, batch_size: int, dist: Dist) -> list[np.ndarray]:
    """This process's batches: a disjoint, equal share of `rows` (the remainder modulo processes is dropped)."""
    usable = len(rows) - len(rows) % dist.world_size
    mine = rows[:usable][dist.rank::dist.world_size]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def run_epochs(run: Run, batches_of: TrainBatches, log: Callable[..., None]) -> bool:
    """Train the epochs left; False when this job stopped after --stop_after_epoch (the run is not finished)."""
    cfg, dist, state, last = run.cfg, run.dist, run.state, Path(run.cfg.ckpt_dir) / "last.pt"
    resume_hint = (f"continue with: python train_1d_baseline.py --data_dir {cfg.data_dir} --ckpt_dir {cfg.ckpt_dir} "
                   f"--resume {last} --epochs {cfg.epochs}")
    with stop_on_signals() as stop:
        try:
            while state.epoch < cfg.epochs and not state.stopped_early:
                started = time.time()
                stats = fit_epoch(run, state.epoch, batches_of, stop)
                if dist.is_main:
                    end_epoch(run, stats, started, log)
                stale = int(dist.is_main and cfg.patience > 0 and state.epoch - state.best_epoch >= cfg.patience)
                stale, signum = dist.agree([stale, stop.signum])
                if stale:
                    log(f"no better val macro AUC for {cfg.patience} epochs: stopping early")
                    state.stopped_early = True
                    if dist.is_main:
                        save_checkpoint(run.checkpoint(), last)
                if signum:
                    raise TrainingInterrupted(signum)
                if cfg.stop_after_epoch is not None and cfg.stop_after_epoch <= state.epoch < cfg.epochs \
                        and not state.stopped_early:
                    log(f"stopped after epoch {state.epoch} as asked; {resume_hint}")
                    dist.barrier()
                    return False
        except TrainingInterrupted:
            if dist.is_main:
                save_checkpoint(run.checkpoint(), last)
                log(f"\ninterrupted: saved {last} (epoch {state.epoch}, +{state.batches_done} batches); {resume_hint}")
            dist.barrier()
            raise
        except torch.OutOfMemoryError:
            raise out_of_memory(run, last) from None
    return True


def fit_epoch(run: Run, epoch: int, batches_of: TrainBatches, stop: StopFlag) -> dict:
    """Back-propagate the rest of `epoch` (all of it unless resumed mid-epoch) under a progress bar; returns
    its train_loss (NaN when nothing was back-propagated), lr at its end, epoch_backpropagated (all processes)
    and samples_per_second, and marks it done in run.state."""
    cfg, state, n_train = run.cfg, run.state, len(run.data.X["train"])
    rows = epoch_rows(n_train, cfg.seed, epoch, run.plan.rows(epoch, n_train))
    if run.step.scores is not None:
        rows, weights = run.plan.select(epoch, rows, run.step.scores.last, cfg.seed)
    batches = epoch_batches(rows, cfg.batch_size, run.dist)
    if run.step.scores is not None:
        run.step.scores.start_epoch(batches, rows, weights)
    sizes = [len(batch) for batch in batches]

    def lr_at(b: int) -> float:
        return one_cycle_lr((epoch + b / max(len(batches), 1)) / cfg.schedule_epochs, cfg.lr)

    state.partition = (cfg.batch_size, run.dist.world_size)
    started = time.time()
    with tqdm(total=sum(sizes), initial=sum(sizes[:state.batches_done]), unit="sample", leave=False,
              desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (run.dist.is_main and sys.stderr.isatty())) as bar:
        try:
            train_epoch(run.step, batch_stream(batches_of, epoch, batches, state.batches_done, cfg.workers), lr_at,
                        stop, state, bar, run.plan.batch_threshold(epoch))
        finally:
            state.train_seconds += time.time() - started
    if run.step.scores is not None:
        run.step.scores.end_epoch()
    backpropagated = state.epoch_samples * run.dist.world_size
    stats = {"train_loss": state.epoch_loss_sum / state.epoch_samples if state.epoch_samples else math.nan,
             "lr": lr_at(max(len(batches) - 1, 0)), "epoch_backpropagated": backpropagated,
             "samples_per_second": round(backpropagated / (time.time() - started), 1)}
    state.epoch, state.batches_done, state.epoch_loss_sum, state.epoch_samples = epoch + 1, 0, 0.0, 0
    return stats


def end_epoch(run: Run, stats: dict, started: float, log: Callable[..., None]) -> None:
    """Rank 0: score validation, append the history row, write last.pt (and best.pt when val AUC improved)."""
    state, ckpt_dir = run.state, Path(run.cfg.ckpt_dir)
    val = summarise(run.score("val"), run.data.y["val"], run.data.multilabel, run.data.classes)
    improved = val["macro_auc"] > state.best_score
    if improved:
        state.best_score, state.best_epoch = val["macro_auc"], state.epoch
    row = {"epoch": state.epoch, "train_loss": stats["train_loss"], "val_loss": val["loss"],
           "val_macro_auc": val["macro_auc"], "lr": stats["lr"], "samples_backpropagated": state.samples_backpropagated,
           "seconds": round(run.elapsed(), 2), "epoch_seconds": round(time.time() - started, 2),
           "samples_per_second": stats["samples_per_second"], "train_records": len(run.data.X["train"]),
           "epoch_backpropagated": stats["epoch_backpropagated"],
           "scoring_forward_samples": state.scoring_forward_samples}
    state.history.append(row)
    save_checkpoint(run.checkpoint(), ckpt_dir / "last.pt")
    if improved:
        copy_checkpoint(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
    write_history_csv(ckpt_dir / "history.csv", state.history)
    kept = f" pdd {run.plan.mode} kept {row['epoch_backpropagated']}/{row['train_records']}" \
        if run.plan.mode != "none" else ""
    log(f"epoch {state.epoch}/{run.cfg.epochs}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
        f"val_macro_auc {row['val_macro_auc']:.4f} lr {row['lr']:.2e} {row['samples_per_second']:.0f} samples/s "
        f"{row['epoch_seconds']:.0f}s{kept}" + (" *best" if improved else ""))
