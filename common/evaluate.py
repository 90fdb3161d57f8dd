"""Record-level prediction by sliding windows, and per-record loss: one code path for val, test and difficulty."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.augment import normalise, sliding_window_starts, sliding_windows

EPS = 1e-7
AGGREGATIONS = ("mean_logit", "max_prob", "mean_prob")
DEFAULT_AGGREGATION = "mean_logit"


def legacy_aggregation(multilabel: bool) -> str:
    """How runs from before the aggregation option were scored: by their windows' highest probability (multi-label)
    or mean probability (single-label)."""
    return "max_prob" if multilabel else "mean_prob"


def aggregate(logits: torch.Tensor, multilabel: bool, aggregation: str) -> torch.Tensor:
    """Record probabilities (N, C) from window logits (N, windows, C): sigmoid (multi-label) or softmax of the
    windows' mean logit (mean_logit), or the highest (max_prob) or mean (mean_prob) of the windows' probabilities."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")

    def activate(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) if multilabel else torch.softmax(x, dim=-1)

    if aggregation == "mean_logit":
        return activate(logits.mean(dim=1))
    probs = activate(logits)
    return probs.amax(dim=1) if aggregation == "max_prob" else probs.mean(dim=1)


def default_stride(window: int) -> int:
    """Samples between sliding-window starts when none is given: half a window."""
    return window // 2


@torch.inference_mode()
def predict(model: nn.Module, X: np.ndarray, norm: dict, multilabel: bool, window: int, stride: int | None = None,
            batch_size: int = 512, device: str | torch.device = "cpu",
            aggregation: str = DEFAULT_AGGREGATION) -> np.ndarray:
    """Class probabilities (N, C) float32 for raw records X (N, leads, T) in mV, e.g. a memmap from load_split.

    Each record is normalised with `norm` (meta.json's or a checkpoint's "normalisation": per-lead "mean" and
    "std"), cut into windows of `window` samples every `stride` (default window // 2, plus one window flush
    with the end), and scored; the windows' logits are aggregated per record by `aggregation` (see aggregate:
    by default the sigmoid or softmax of their mean, chosen on validation over the highest window probability,
    which counts a finding seen in any window; experiments/recipe_search.py). Always in fp32 (never autocast), with the
    windows cut on `device`, so one checkpoint gives the same probabilities on any device. `batch_size` counts
    windows. The model's train/eval mode is left as it was.
    """
    stride = default_stride(window) if stride is None else stride
    device = torch.device(device)
    starts = sliding_window_starts(X.shape[-1], window, stride).to(device)
    records_per_chunk = max(1, batch_size // len(starts))
    was_training = model.training
    model.eval()
    chunks = []
    for first in range(0, len(X), records_per_chunk):
        x = torch.from_numpy(np.array(X[first:first + records_per_chunk], dtype=np.float32)).to(device)
        logits = model(sliding_windows(normalise(x, norm), starts, window)).float()
        chunks.append(aggregate(logits.view(len(x), len(starts), -1), multilabel, aggregation).cpu().numpy())
    model.train(was_training)
    return np.concatenate(chunks).astype(np.float32)


def predict_as_trained(model: nn.Module, ckpt: dict, X: np.ndarray, batch_size: int = 512,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """predict() with what the checkpoint the model was loaded from prescribes: its normalisation, label type,
    window and aggregation."""
    return predict(model, X, ckpt["normalisation"], bool(ckpt["multilabel"]), int(ckpt["input_shape"]["window"]),
                   batch_size=batch_size, device=device, aggregation=ckpt["aggregation"])


def per_record_loss(probs: np.ndarray, y: np.ndarray, multilabel: bool) -> np.ndarray:
    """Loss (N,) of each record on aggregated probabilities: mean binary cross-entropy over classes for
    multi-hot y (N, C), cross-entropy -log p[y] for class-index y (N,); probabilities clipped to [1e-7, 1-1e-7]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1 - EPS)
    if multilabel:
        return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)
    return -np.log(p[np.arange(len(y)), np.asarray(y, dtype=np.int64)])
