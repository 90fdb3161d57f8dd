"""A training run in this process: its model, optimiser and counters, started new (weights from --init_from if
given) or continued exactly from a --resume checkpoint, and the checkpoint it writes (common/checkpoint.py)."""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from common.checkpoint import restore_rng_state, rng_state
from common.config import TrainConfig, options
from common.cuda_graph import GraphedStep, portable_optimizer_state
from common.distributed import Dist
from common.errors import ConfigError
from common.evaluate import predict
from common.files import portable_path, stored_path
from common.model import build_model
from common.online_pdd import Plan, RecordScores, matched_counts, revision_epochs
from common.step import Step, TrainState, loss_fn
from common.traindata import Data


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of training steps: None when off (auto = on for CUDA only); on = bf16 where supported, else
    fp16 (with a GradScaler); bf16 and fp16 force that type. Evaluation never autocasts."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or (device.type == "cuda" and amp != "bf16" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class Run:
    """A training run in this process: what it mutates and checkpoints, and what it was started with."""
    cfg: TrainConfig
    data: Data
    step: Step                            # model, optimiser, mixed precision, loss
    hparams: dict
    plan: Plan                            # online PDD: the rows of each epoch
    state: TrainState
    source: str | None                    # the checkpoint it started from, if any
    job_started: float = field(default_factory=time.time)
    elapsed_before: float = 0.0           # elapsed_seconds of earlier jobs of this run

    @property
    def dist(self) -> Dist:
        return self.step.dist

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.job_started

    def score(self, split: str) -> np.ndarray:
        """Record probabilities of a split, by the same sliding-window predict the difficulty stage uses."""
        return predict(unwrap(self.step.model), self.data.X[split], self.data.norm, self.data.multilabel,
                       self.data.input_shape["window"], batch_size=4 * self.cfg.batch_size, device=self.dist.device,
                       aggregation=self.cfg.aggregation)

    def checkpoint(self) -> dict:
        """Everything needed to continue exactly, or to rebuild and use the model (common.checkpoint)."""
        self.state.elapsed_seconds = self.elapsed()
        return {
            "model": unwrap(self.step.model).state_dict(), "model_hparams": self.hparams,
            "optimizer": portable_optimizer_state(self.step.optimizer.state_dict()),
            "scaler": self.step.scaler.state_dict() if self.step.scaler.is_enabled() else None,
            "state": asdict(self.state), "rng": rng_state(self.dist.device),
            "record_scores": self.step.scores.state_dict() if self.step.scores is not None else None,
            "schedule_epochs": self.cfg.schedule_epochs,
            "classes": self.data.classes, "task": self.data.task, "multilabel": self.data.multilabel,
            "normalisation": self.data.norm, "input_shape": self.data.input_shape, "signal": self.data.signal,
            "aggregation": self.cfg.aggregation,
            "data_dir": portable_path(Path(self.cfg.data_dir), Path(self.cfg.ckpt_dir)),
            "data_fingerprint": self.data.fingerprint,
            "pdd_split_id": self.data.pdd_split_id,
            "config": asdict(self.cfg), "torch_version": str(torch.__version__),
        }


def seed_process(seed: int, rank: int) -> None:
    """Seed python, numpy and torch's global generators (dropout draws from torch's) per (seed, rank), so that
    processes of a torchrun job draw different dropout masks."""
    state = np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0]
    random.seed(int(state))
    np.random.seed(int(state % 2**32))
    torch.manual_seed(int(state))


def start_run(cfg: TrainConfig, ckpt: dict | None, data: Data, dist: Dist, log: Callable[..., None]) -> Run:
    """A new run (weights from --init_from if given), or the --resume checkpoint's run continued."""
    source = cfg.resume or cfg.init_from
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    hparams = dict(n_leads=data.input_shape["leads"], n_classes=len(data.classes), width=cfg.width,
                   stages=cfg.stages, blocks=cfg.blocks, kernel_size=cfg.kernel_size, dropout=cfg.dropout)
    if ckpt is not None:  # its model (resolve_config gave cfg its ARCHITECTURE), with this run's dropout
        hparams = {**ckpt["model_hparams"], "dropout": cfg.dropout}
    model = build_model(**hparams)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(dist.device)
    seed_process(cfg.seed, dist.rank)
    amp_dtype = amp_dtype_for(cfg.amp, dist.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16)
    plan = pdd_plan(cfg, len(data.X["train"]))
    run = Run(cfg=cfg, data=data, step=Step(model, optimizer, scaler, amp_dtype, data.multilabel, dist,
                                             restore_bn=plan.restore_bn),
              hparams=hparams, plan=plan, state=TrainState(), source=source)
    if run.plan.tracks_records:
        run.step.scores = RecordScores(len(data.X["train"]), run.plan, data.multilabel)
    if cfg.resume:
        continue_run(run, ckpt, log)
    if cfg.cuda_graphs == "auto" and dist.device.type == "cuda" and dist.world_size == 1 \
            and amp_dtype != torch.float16 and cfg.pdd not in ("dbpd", "infobatch"):
        run.step.graphed = GraphedStep(model, run.step.optimizer, partial(loss_fn, multilabel=data.multilabel),
                                       amp_dtype)
    if dist.world_size > 1:
        run.step.model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return run


def pdd_plan(cfg: TrainConfig, n_train: int) -> Plan:
    """The run's online PDD plan; for smrd with the per-epoch counts of the --pdd_match run."""
    try:
        matched = matched_counts(Path(cfg.pdd_match), n_train, cfg.epochs) if cfg.pdd == "smrd" else ()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    revision = revision_epochs(cfg.epochs, 1 - cfg.pdd_delta if cfg.pdd == "infobatch" else cfg.revision_frac)
    if cfg.pdd == "infobatch" and revision == 0:
        raise ConfigError(f"--pdd_delta {cfg.pdd_delta} leaves no full-data epoch in {cfg.epochs} epochs "
                          f"(round({cfg.epochs} * (1 - delta)) = 0); lower --pdd_delta to at most "
                          f"{math.floor((1 - 1 / cfg.epochs) * 1000) / 1000:g} or train more epochs")
    return Plan(mode=cfg.pdd, epochs=cfg.epochs, revision=revision, threshold=cfg.pdd_threshold, gamma=cfg.pdd_gamma,
                matched=matched, scores=cfg.pdd_scores, readmit=cfg.pdd_readmit, ratio=cfg.pdd_ratio,
                restore_bn=cfg.pdd_bn == "restore")


def continue_run(run: Run, ckpt: dict, log: Callable[..., None]) -> None:
    """Restore optimizer, scaler, counters and RNG from a last.pt, possibly of another run dir or other data."""
    cfg, dist = run.cfg, run.dist
    run.step.optimizer.load_state_dict(ckpt["optimizer"])
    for group in run.step.optimizer.param_groups:
        group["weight_decay"] = cfg.weight_decay
    if ckpt["scaler"] is not None and run.step.scaler.is_enabled():
        run.step.scaler.load_state_dict(ckpt["scaler"])
    run.state = state = TrainState(**{**ckpt["state"], "partition": tuple(ckpt["state"].get("partition", (0, 1)))})
    run.elapsed_before = state.elapsed_seconds
    if dist.world_size == 1:
        restore_rng_state(ckpt["rng"], dist.device)
    else:  # one saved state cannot serve every rank: draw afresh, per rank, from where the run stands
        seed_process(cfg.seed + 1_000_003 * (state.epoch + 1) + state.batches_done, dist.rank)
    changed = [f"--{name} {ckpt['config'][name]} -> {getattr(cfg, name)}" for name in options(inherited=True)
               if name in ckpt["config"] and ckpt["config"][name] != getattr(cfg, name)]
    if changed:
        log(f"options changed from {cfg.resume}'s run: {', '.join(changed)}")
    same_dir = Path(cfg.resume).resolve().parent == Path(cfg.ckpt_dir).resolve()
    if not same_dir:  # a new run dir (next PDD stage): its own best.pt and patience
        state.best_score, state.best_epoch, state.stopped_early = float("-inf"), 0, False
    if state.epoch >= cfg.epochs or state.stopped_early:
        if same_dir and not (Path(cfg.ckpt_dir) / "metrics.json").is_file():
            log(f"{cfg.resume}: training finished at epoch {state.epoch} but the run has no metrics.json "
                "(interrupted during the final evaluation); writing the report")
            return
        if state.stopped_early:
            raise ConfigError(f"{cfg.resume} already stopped early by --patience (epoch {state.epoch}); resume it into "
                              "another --ckpt_dir (a new best.pt and patience count), or start a new run")
        further = (f"--epochs E with E above {state.epoch}" if state.epoch < cfg.schedule_epochs else
                   f"--epochs E --schedule_epochs E with E above {state.epoch}")
        raise ConfigError(f"{cfg.resume} already finished its epochs (epoch {state.epoch}); to train it further pass "
                          f"{further} (its one-cycle schedule ends at epoch {cfg.schedule_epochs}), or start a new run")
    if ckpt["data_fingerprint"] != run.data.fingerprint:
        unfinished = "; its unfinished epoch restarts" if state.batches_done else ""
        log(f"resuming on different data: {stored_path(ckpt['data_dir'], Path(cfg.resume).parent)} (dataset fingerprint "
            f"{ckpt['data_fingerprint'].get('dataset', '?')[:12]}) -> {cfg.data_dir} "
            f"({run.data.fingerprint.get('dataset', '?')[:12]}){unfinished}"
            + ("; records' last scores start afresh" if run.step.scores is not None else ""))
        state.batches_done, state.epoch_loss_sum, state.epoch_samples = 0, 0.0, 0
    elif run.step.scores is not None and ckpt.get("record_scores") is not None:
        run.step.scores.load_state_dict(ckpt["record_scores"])
    if state.batches_done and tuple(state.partition) != (cfg.batch_size, dist.world_size):
        size, processes = state.partition
        raise ConfigError(f"{cfg.resume} stopped in the middle of epoch {state.epoch + 1}, after {state.batches_done} "
                          f"batches of {size} records on {processes} process(es); its remaining records are known "
                          f"only for that partition: resume with --batch_size {size} on {processes} process(es)")
