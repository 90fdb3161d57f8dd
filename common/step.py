"""One epoch of optimiser steps: the Step a batch goes through (model, optimiser, mixed precision, loss), the
counters a checkpoint carries, and the stop flag a signal sets."""
from __future__ import annotations

import contextlib
import math
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.cuda_graph import GraphedStep, set_lr
from common.distributed import Dist
from common.errors import NonFiniteLossError, TrainingInterrupted
from common.online_pdd import RecordScores, dbpd_mask, scoring_logits, true_label_prob

CHECK_EVERY = 50  # batches between the loop's host syncs (NaN/Inf check, stop flag across processes)


@dataclass
class TrainState:
    """The counters a checkpoint carries so that a run continues exactly where it stopped."""
    epoch: int = 0                        # completed epochs
    batches_done: int = 0                 # batches of the next epoch already back-propagated (interrupted)
    epoch_loss_sum: float = 0.0           # sum of batch loss * batch size over those batches
    epoch_samples: int = 0
    samples_backpropagated: int = 0       # all processes, all jobs and stages of the run
    scoring_forward_samples: int = 0      # DBPD's forward passes without grad that chose them, counted likewise
    elapsed_seconds: float = 0.0
    train_seconds: float = 0.0            # of elapsed_seconds, the time spent back-propagating
    best_score: float = float("-inf")     # best validation macro AUC written to best.pt in this run dir
    best_epoch: int = 0
    stopped_early: bool = False           # --patience ended the epochs; only the report may be left to write
    partition: tuple[int, int] = (0, 1)   # batch size and processes the unfinished epoch was cut into batches by
    history: list[dict] = field(default_factory=list)


@dataclass
class Step:
    """What a training step uses: the model and its optimiser, mixed precision, and how the loss is taken."""
    model: nn.Module                      # DistributedDataParallel-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler          # enabled for fp16 autocast only
    amp_dtype: torch.dtype | None
    multilabel: bool
    dist: Dist
    graphed: GraphedStep | None = None    # the captured training step (common/cuda_graph.py), on one GPU
    scores: RecordScores | None = None    # each record's last training score (infobatch, dbpd --pdd_scores last)
    restore_bn: bool = True               # dbpd fresh: put BatchNorm's running stats back after scoring


@dataclass
class StopFlag:
    """The number of the SIGINT/SIGTERM received (0: none); the loop checks it after every batch."""
    signum: int = 0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Turn SIGINT/SIGTERM into a StopFlag while training; a second signal acts as it normally would."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.signum = signum
        signal.signal(signum, previous[signum])

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Sigmoid + binary cross-entropy for multi-hot targets, softmax + cross-entropy for class indices."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)


def train_epoch(step: Step, batches: Iterable[tuple[int, torch.Tensor, torch.Tensor]], lr_at: Callable[[int], float],
                stop: StopFlag, state: TrainState, bar: tqdm, threshold: float | None = None) -> None:
    """Back-propagate (batch number, x, y) batches. Losses stay on the device; every CHECK_EVERY batches, at the
    epoch's end, and as soon as a signal arrived, they are fetched at once (one host sync), checked, and folded
    into `state`. With a DBPD `threshold`, each batch is first scored without grad and only its hard records
    are back-propagated (none: no step at all). With step.scores, each batch's loss is weighted per record and each
    record's score kept (infobatch, dbpd --pdd_scores last). With step.graphed, full batches replay a captured CUDA
    graph of the step (common/cuda_graph.py). Raises NonFiniteLossError when a loss was NaN/Inf (the state on disk
    is the last good checkpoint), TrainingInterrupted at the check after a signal came."""
    model, optimizer, scaler, dist, scores = step.model, step.optimizer, step.scaler, step.dist, step.scores
    amp_dtype, multilabel, graphed = step.amp_dtype, step.multilabel, step.graphed
    model.train()
    pending: list[tuple[int, torch.Tensor, int, float]] = []  # (batch, loss on the device, records, lr)
    seen = state.batches_done  # batches of this epoch done, checked or not

    def check(signum: int) -> None:
        values = torch.stack([loss for _, loss, _, _ in pending]).tolist() if pending else []
        bad = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
        non_finite, signum = dist.agree([int(bad is not None), signum])
        if non_finite:
            b, _, _, lr = pending[bad] if bad is not None else pending[-1]
            raise NonFiniteLossError(
                f"training loss became {values[bad] if bad is not None else 'NaN/Inf in another process'} at epoch "
                f"{state.epoch + 1}, batch {b + 1} (lr {lr:.3g}); the last checkpoint written before it is kept. "
                "Check the data for NaN/Inf values, or lower --lr, or use --amp off")
        state.batches_done = seen
        if scores is not None:
            scores.fetch()
        for (_, _, n, _), value in zip(pending, values):
            state.epoch_loss_sum += value * n
            state.epoch_samples += n
            state.samples_backpropagated += n * dist.world_size
        if values:
            bar.set_postfix(loss=f"{values[-1]:.4f}", lr=f"{pending[-1][3]:.2e}", refresh=False)
        pending.clear()
        if signum:
            raise TrainingInterrupted(signum)

    for b, x, y in batches:
        lr = lr_at(b)
        set_lr(optimizer, lr)
        scored = len(y)
        if threshold is not None:
            keep = dbpd_mask(true_label_prob(scoring_logits(model, x, amp_dtype, step.restore_bn), y, multilabel),
                             threshold)
            x, y = x[keep], y[keep]
            state.scoring_forward_samples += scored * dist.world_size
        if graphed is not None and graphed.fits(x, y):
            pending.append((b, graphed(x, y), len(y), lr))
        elif len(y):
            with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            loss = loss_fn(logits, y, multilabel) if scores is None else scores.loss(b, logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            pending.append((b, loss.detach(), len(y), lr))
        seen = b + 1
        bar.update(scored)
        if len(pending) >= CHECK_EVERY or (dist.world_size == 1 and stop.signum):
            check(stop.signum)
    check(stop.signum)
