"""Bootstrap statistics over test records: confidence intervals of ROC AUCs and of a paired macro-AUC difference.

Resampling the N records with replacement is weighting each record by how often it was drawn, so a resample's
AUC is a weighted Mann-Whitney statistic, computed for all resamples at once from one sort per class.
"""
from __future__ import annotations

import numpy as np

from common.labels import one_hot


def bootstrap_weights(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Counts (resamples, n) int64: row r says how often each of n records is drawn in resample r (rows sum to n)."""
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    offsets = (n * np.arange(resamples))[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n).reshape(resamples, n)


def point_and_bootstrap_weights(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Counts (1 + resamples, n): row 0 all ones (the records as they are: the point estimate), then
    bootstrap_weights."""
    return np.vstack([np.ones((1, n), dtype=np.int64), bootstrap_weights(n, resamples, seed)])


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (R,) of 1-D scores under each row of record weights (R, N), tied scores counted 1/2; NaN where a
    row gives no weight to positives or to negatives (the AUC is undefined there)."""
    positive, weights = np.asarray(positive, dtype=bool), np.asarray(weights, dtype=np.float64)
    negatives = np.flatnonzero(~positive)
    negatives = negatives[np.argsort(scores[negatives], kind="stable")]
    neg_scores = scores[negatives]
    # below[:, k]: weight of the k lowest-scored negatives, so a positive outranks below[:, left] of them and
    # ties with below[:, right] - below[:, left]. One flat cumsum, each row's start then subtracted, is several
    # times faster than cumsum(axis=1).
    padded = np.zeros((len(weights), len(negatives) + 1))
    padded[:, 1:] = np.take(weights, negatives, axis=1)
    running = np.cumsum(padded).reshape(padded.shape)
    below = running - running[:, :1]
    pos_scores = scores[positive]
    left = np.searchsorted(neg_scores, pos_scores, side="left")
    right = np.searchsorted(neg_scores, pos_scores, side="right")
    pos_weights = weights[:, positive]
    wins = np.einsum("rp,rp->r", pos_weights, np.take(below, left, axis=1) + np.take(below, right, axis=1)) / 2
    pairs = pos_weights.sum(axis=1) * below[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def resampled_aucs(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-class one-vs-rest AUC (R, C) of each weight row; class-index targets (N,) are expanded one-vs-rest."""
    targets, weights = np.asarray(targets), np.asarray(weights, dtype=np.float64)
    if targets.ndim == 1:
        targets = one_hot(targets, probs.shape[1], multilabel=False)
    return np.stack([weighted_auc(probs[:, k], targets[:, k] > 0.5, weights) for k in range(probs.shape[1])],
                    axis=1)


def macro_over_defined(aucs: np.ndarray) -> np.ndarray:
    """Macro AUC (R,) of each row over its defined classes, as common.metrics.macro; NaN where none is defined."""
    defined = ~np.isnan(aucs)
    with np.errstate(invalid="ignore"):
        return np.where(defined, aucs, 0).sum(axis=1) / defined.sum(axis=1)


def percentile_interval(values: np.ndarray, level: float) -> list[float] | None:
    """The central `level` percentile interval of the defined values; None when no value is defined."""
    values = values[~np.isnan(values)]
    if not len(values):
        return None
    tail = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(values, [tail, 100 - tail])]


def auc_intervals(probs: np.ndarray, targets: np.ndarray, classes: list[str], resamples: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Percentile bootstrap intervals of the macro AUC and of each class's AUC over resampled records.

    targets: multi-hot (N, C) or class indices (N,). A resample in which a class lacks positives or negatives
    leaves that class out of that resample's macro; a class never defined gets None.
    """
    aucs = resampled_aucs(probs, targets, bootstrap_weights(len(probs), resamples, seed))
    return {"macro_auc": percentile_interval(macro_over_defined(aucs), level),
            "per_class_auc": {c: percentile_interval(aucs[:, k], level) for k, c in enumerate(classes)},
            "resamples": resamples, "seed": seed}


def paired_auc_difference(probs_a: np.ndarray, probs_b: np.ndarray, targets: np.ndarray, resamples: int = 1000,
                          seed: int = 0, level: float = 0.95) -> dict:
    """Macro AUC of model a minus model b on the same records, and its percentile bootstrap interval from the
    same resamples for both models (pairing cancels the records' shared difficulty)."""
    weights = point_and_bootstrap_weights(len(probs_a), resamples, seed)
    difference = (macro_over_defined(resampled_aucs(probs_a, targets, weights))
                  - macro_over_defined(resampled_aucs(probs_b, targets, weights)))
    return {"difference": None if np.isnan(difference[0]) else float(difference[0]),
            "interval": percentile_interval(difference[1:], level), "resamples": resamples, "seed": seed}
