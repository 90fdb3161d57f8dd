"""Online Progressive Data Dropout (Shriram M S et al., NeurIPS 2025, arXiv 2505.22342): which samples each
epoch back-propagates, decided while training rather than from a scored baseline (compare common/pdd.py).

Modes (--pdd), each ending with full-data revision epochs (the last round(revision_frac * epochs) of the run):
  none  every row, every epoch
  dbpd  difficulty-based: every row is scored by a forward pass without grad on its training window, and only
        the rows the model still finds hard are back-propagated: true-label probability below --pdd_threshold
  srd   scalar random: a random ceil(gamma^epoch * N) rows (epoch counted from 0, so the first epoch uses all)
  smrd  schedule-matched random: as many random rows per epoch as a finished DBPD run back-propagated

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

import torch
from torch import nn

PDD_MODES = ("none", "dbpd", "srd", "smrd")


@dataclass(frozen=True)
class Plan:
    """A run's online PDD settings, resolved: how many rows each epoch takes and whether DBPD selects within them."""
    mode: str = "none"
    epochs: int = 1                       # the run's total epochs; the last `revision` of them use all rows
    revision: int = 0
    threshold: float = 0.7
    gamma: float = 0.9
    matched: tuple[int, ...] = ()         # smrd: rows per epoch, the DBPD run's epoch_backpropagated

    def revising(self, epoch: int) -> bool:
        """Whether 0-based `epoch` is a revision epoch: all rows, no selection."""
        return epoch >= self.epochs - self.revision

    def rows(self, epoch: int, n_train: int) -> int:
        """Random rows `epoch` draws from the n_train (all of them unless SRD/SMRD before revision)."""
        if self.revising(epoch) or self.mode in ("none", "dbpd"):
            return n_train
        if self.mode == "srd":
            return srd_count(n_train, self.gamma, epoch)
        return self.matched[epoch]

    def batch_threshold(self, epoch: int) -> float | None:
        """DBPD's threshold when `epoch` selects hard samples within each batch, else None (back-propagate all)."""
        return self.threshold if self.mode == "dbpd" and not self.revising(epoch) else None


def revision_epochs(epochs: int, revision_frac: float) -> int:
    """Number of full-data revision epochs at the end of a run of `epochs`."""
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


@torch.no_grad()
def scoring_logits(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """Logits of a batch without grad, in the model's train mode, leaving its buffers (BatchNorm running
    statistics) as they were: the scoring pass changes nothing."""
    saved = [buffer.clone() for buffer in model.buffers()]
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x).float()
    for buffer, value in zip(model.buffers(), saved):
        buffer.copy_(value)
    return logits


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
