"""Online Progressive Data Dropout (Shriram M S et al., NeurIPS 2025, arXiv 2505.22342): which samples each
epoch back-propagates, decided while training rather than from a scored baseline (compare common/pdd.py).

Modes (--pdd), each ending with full-data revision epochs (the last round(revision_frac * epochs) of the run):
  none  every row, every epoch
  dbpd  difficulty-based: every row is scored by a forward pass without grad on its training window, and only
        the rows the model still finds hard are back-propagated: true-label probability below --pdd_threshold
  srd   scalar random: a random ceil(gamma^epoch * N) rows (epoch counted from 0, so the first epoch uses all)
  smrd  schedule-matched random: as many random rows per epoch as a finished DBPD run back-propagated
  infobatch  InfoBatch (Qin et al., ICLR 2024): each epoch, of the records whose last training loss is below
        the mean of all records' last losses, a random fraction --pdd_ratio is left out (no forward pass), and
        the loss of the kept ones is scaled by 1 / (1 - ratio), so the expected gradient is unchanged; the last
        round((1 - --pdd_delta) * epochs) epochs train on all records (instead of --revision_frac)

With --pdd_scores last, dbpd decides from each record's true-label probability at its most recent training
forward pass (kept per record in last.pt) instead of a second forward pass per batch: an epoch back-propagates
the records never trained yet, those still hard, and a random --pdd_readmit fraction of the learnt ones, which
refreshes their scores, so a learnt record comes back once it is found hard again (and in the revision epochs).
Score-based selections (infobatch, dbpd --pdd_scores last) read the scores as of the epoch's start; the epoch's
new scores replace them at its end, so a resumed epoch selects the same records.

True-label probability of a record, on the sigmoid or softmax of one window's logits:
  single-label  the softmax probability of its class (the paper's definition)
  multi-label   its lowest probability of being right over the classes: p for a positive class, 1 - p for a
                negative one. A record counts as learnt only when every class is predicted right with
                probability >= threshold, so one missed finding keeps it in training.

The scoring pass runs in train mode (BatchNorm normalises by batch statistics, dropout is active), as the
back-propagated forward does, and then puts BatchNorm's running statistics back, so they are only updated by
forward passes that are back-propagated, as in every other mode. Its samples are counted apart
(scoring_forward_samples): the paper's effective epochs leave them out; we report both.

Defaults, chosen from the paper and reasoning, not tuned on PTB-XL (no real-data runs here):
  threshold 0.7      the paper's 0.3 is a softmax over 10-100 classes; a sigmoid class is right from 0.5, so 0.7
                     asks every class to be right with a margin. 0.9 would keep most PTB-XL records (noisy labels,
                     macro-AUC about 0.9) and save little; 0.5 would drop records right only by a hair.
  gamma 0.9          over 30 epochs with 6 of revision: 9.2 + 6 = 15.2 effective epochs, about half the baseline,
                     and the last epoch before revision still sees 9 % of the records.
  revision_frac 0.2  the paper revises in the last of 30 epochs under a step decay; our one-cycle schedule anneals
                     over the last epochs, so that tail (6 of 30) trains on every record.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PDD_MODES = ("none", "dbpd", "srd", "smrd", "infobatch")
SCORE_SOURCES = ("fresh", "last")


@dataclass(frozen=True)
class Plan:
    """A run's online PDD settings, resolved: how many rows each epoch takes and whether DBPD selects within them."""
    mode: str = "none"
    epochs: int = 1                       # the run's total epochs; the last `revision` of them use all rows
    revision: int = 0
    threshold: float = 0.7
    gamma: float = 0.9
    matched: tuple[int, ...] = ()         # smrd: rows per epoch, the DBPD run's epoch_backpropagated
    scores: str = "fresh"                 # dbpd: "fresh" scoring pass per batch, or each record's "last" score
    readmit: float = 0.1                  # dbpd last: fraction of the learnt records trained anyway each epoch
    ratio: float = 0.5                    # infobatch: fraction of the below-mean-loss records left out
    restore_bn: bool = True               # dbpd fresh: the scoring pass leaves BatchNorm's running stats as they were

    @property
    def tracks_records(self) -> bool:
        """Whether the run keeps each record's last training score and selects an epoch's rows from them."""
        return self.mode == "infobatch" or (self.mode == "dbpd" and self.scores == "last")

    def revising(self, epoch: int) -> bool:
        """Whether 0-based `epoch` is a revision epoch: all rows, no selection."""
        return epoch >= self.epochs - self.revision

    def rows(self, epoch: int, n_train: int) -> int:
        """Random rows `epoch` draws from the n_train (all of them unless SRD/SMRD before revision)."""
        if self.revising(epoch) or self.mode not in ("srd", "smrd"):
            return n_train
        if self.mode == "srd":
            return srd_count(n_train, self.gamma, epoch)
        return self.matched[epoch]

    def batch_threshold(self, epoch: int) -> float | None:
        """DBPD's threshold when `epoch` selects hard samples within each batch, else None (back-propagate all)."""
        fresh = self.mode == "dbpd" and self.scores == "fresh"
        return self.threshold if fresh and not self.revising(epoch) else None

    def select(self, epoch: int, rows: np.ndarray, last: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of `rows` that `epoch` back-propagates, in their order, and each one's loss weight, from
        `last`, every record's score as of the epoch's start (NaN: never trained, so hard); seeded by (seed, epoch)."""
        if not self.tracks_records or self.revising(epoch):
            return rows, np.ones(len(rows), np.float32)
        score, draw = last[rows], np.random.default_rng([seed, epoch, 1]).random(len(rows))
        if self.mode == "infobatch":
            seen = last[~np.isnan(last)]
            well_learnt = score < seen.mean() if len(seen) else np.zeros(len(rows), bool)
            keep = ~(well_learnt & (draw < self.ratio))
            return rows[keep], np.where(well_learnt[keep], 1 / (1 - self.ratio), 1.0).astype(np.float32)
        keep = ~(score >= self.threshold) | (draw < self.readmit)
        return rows[keep], np.ones(int(keep.sum()), np.float32)


def revision_epochs(epochs: int, revision_frac: float) -> int:
    """Number of full-data revision epochs at the end of a run of `epochs` (infobatch: revision_frac = 1 - delta)."""
    return round(epochs * revision_frac)


def srd_count(n: int, gamma: float, epoch: int) -> int:
    """SRD's rows in 0-based `epoch`: ceil(gamma^epoch * n), rounded first so float error cannot add a row."""
    return math.ceil(round(n * gamma**epoch, 6))


def true_label_prob(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """(B,) probability that each record is predicted right: lower = harder (see the module docstring)."""
    logits = logits.float()
    if multilabel:
        p = torch.sigmoid(logits)
        return torch.where(y > 0.5, p, 1 - p).amin(dim=1)
    return torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)


def dbpd_mask(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """Boolean mask of the hard records: true-label probability below the threshold, or NaN (so that a broken
    record reaches the loss's NaN/Inf check instead of being dropped as learnt)."""
    return ~(prob >= threshold)


def record_losses(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """(B,) loss of each record: mean binary cross-entropy over classes, or cross-entropy; their mean is the
    training loss."""
    logits = logits.float()
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)
    return F.cross_entropy(logits, y, reduction="none")


@torch.no_grad()
def scoring_logits(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None,
                   restore_bn: bool = True) -> torch.Tensor:
    """Logits of a batch without grad, in the model's train mode; with restore_bn its buffers (BatchNorm running
    statistics) are put back, so the scoring pass changes nothing (the paper's code lets it update them)."""
    saved = [buffer.clone() for buffer in model.buffers()] if restore_bn else []
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x).float()
    for buffer, value in zip(model.buffers(), saved):
        buffer.copy_(value)
    return logits


class RecordScores:
    """Each train record's score at its most recent training forward pass, for the score-based selections: its
    loss (infobatch) or true-label probability (dbpd --pdd_scores last); NaN until first trained. `last` holds the
    scores as of the epoch's start, this epoch's collect in `fresh`; end_epoch moves them over."""

    def __init__(self, n_train: int, plan: Plan, multilabel: bool):
        self.last = np.full(n_train, np.nan, np.float32)
        self.fresh = np.full(n_train, np.nan, np.float32)
        self.weights = np.ones(n_train, np.float32)
        self.batches: list[np.ndarray] = []
        self.pending: list[tuple[np.ndarray, torch.Tensor]] = []
        self.by_loss, self.multilabel = plan.mode == "infobatch", multilabel

    def start_epoch(self, batches: list[np.ndarray], rows: np.ndarray, weights: np.ndarray) -> None:
        """The epoch's batches (rows per batch number) and the loss weight of each selected row."""
        self.batches = batches
        self.weights[:] = 1.0
        self.weights[rows] = weights

    def loss(self, b: int, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Batch b's weighted training loss; each record's score is kept (on the device until fetch)."""
        rows = self.batches[b]
        losses = record_losses(logits, y, self.multilabel)
        score = losses if self.by_loss else true_label_prob(logits.detach(), y, self.multilabel)
        self.pending.append((rows, score.detach()))
        return (losses * torch.from_numpy(self.weights[rows]).to(losses.device)).mean()

    def fetch(self) -> None:
        """Copy the kept scores to the host (the training loop calls it at its host syncs)."""
        if self.pending:
            values = torch.cat([score for _, score in self.pending]).float().cpu().numpy()
            self.fresh[np.concatenate([rows for rows, _ in self.pending])] = values
            self.pending.clear()

    def end_epoch(self) -> None:
        """The epoch's scores become the records' last scores."""
        self.fetch()
        trained = ~np.isnan(self.fresh)
        self.last[trained] = self.fresh[trained]
        self.fresh[:] = np.nan

    def state_dict(self) -> dict:
        return {"last": torch.from_numpy(self.last.copy()), "fresh": torch.from_numpy(self.fresh.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.last[:], self.fresh[:] = state["last"].numpy(), state["fresh"].numpy()


def matched_counts(run_dir: Path, n_train: int, epochs: int) -> tuple[int, ...]:
    """SMRD's rows per epoch: epoch_backpropagated of a finished DBPD run on as many train rows, for `epochs`."""
    fix = f"pass --pdd_match the run dir of a finished --pdd dbpd run of at least {epochs} epochs on this data"
    metrics_path, history_path = run_dir / "metrics.json", run_dir / "history.csv"
    if not metrics_path.is_file() or not history_path.is_file():
        raise ValueError(f"--pdd_match {run_dir} holds no metrics.json and history.csv; {fix}")
    mode = json.loads(metrics_path.read_text()).get("pdd", {}).get("mode", "none")
    if mode != "dbpd":
        raise ValueError(f"--pdd_match {run_dir} is a --pdd {mode} run; {fix}")
    with open(history_path, newline="") as f:
        history = list(csv.DictReader(f))
    trained_on = {int(row["train_records"]) for row in history}
    if len(history) < epochs or trained_on != {n_train}:
        raise ValueError(f"--pdd_match {run_dir} trained {len(history)} epochs on {sorted(trained_on)} train rows, "
                         f"this run needs {epochs} on {n_train}; {fix}")
    return tuple(int(row["epoch_backpropagated"]) for row in history[:epochs])
