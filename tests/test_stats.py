"""common/stats.py: the weighted AUC of a resample is sklearn's AUC of the resampled records, and the bootstrap
intervals behave as intervals should (contain the estimate, shrink with records, pair two models)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from common.metrics import summarise
from common.stats import auc_intervals, bootstrap_weights, paired_auc_difference, resampled_aucs

CLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
PREVALENCE = [0.44, 0.25, 0.24, 0.22, 0.12]  # about PTB-XL's superdiagnostic classes


def ptbxl_like(n: int, separation: float = 1.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot targets (n, 5) at PTB-XL-like prevalence, and probabilities of a model of AUC about 0.85."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, len(CLASSES))) < PREVALENCE).astype(np.float32)
    logits = separation * (targets - 0.5) + rng.standard_normal(targets.shape)
    return (1 / (1 + np.exp(-logits))).astype(np.float32), targets


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_resamples_weighted_auc_is_sklearns_auc_of_the_resampled_records(seed):
    probs, targets = ptbxl_like(300, seed=seed)
    probs = np.round(probs, 1)  # many tied scores, within and across labels
    weights = bootstrap_weights(len(probs), resamples=20, seed=seed)
    assert (weights.sum(axis=1) == len(probs)).all() and weights.max() > 1  # records drawn several times
    aucs = resampled_aucs(probs, targets, weights)
    for r in range(len(weights)):
        rows = np.repeat(np.arange(len(probs)), weights[r])
        expected = [roc_auc_score(targets[rows, k], probs[rows, k]) for k in range(len(CLASSES))]
        np.testing.assert_allclose(aucs[r], expected, rtol=0, atol=1e-12)


def test_class_indices_are_scored_one_vs_rest():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200) + 0.5 * np.eye(3)[y]
    aucs = resampled_aucs(probs, y, np.ones((1, 200), dtype=np.int64))
    np.testing.assert_allclose(aucs[0], [roc_auc_score(y == k, probs[:, k]) for k in range(3)], atol=1e-12)


def test_intervals_contain_the_estimate_and_shrink_with_more_records():
    widths = []
    for n in (300, 3000):
        probs, targets = ptbxl_like(n)
        point = summarise(probs, targets, True, CLASSES)
        intervals = auc_intervals(probs, targets, CLASSES)
        lo, hi = intervals["macro_auc"]
        assert lo < point["macro_auc"] < hi
        for c in CLASSES:
            assert intervals["per_class_auc"][c][0] < point["per_class_auc"][c] < intervals["per_class_auc"][c][1]
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ten times the records: about a third of the width


def test_a_class_lacking_a_label_is_left_out():
    probs, targets = ptbxl_like(200)
    targets[:, 1] = 0
    targets[:3, 4], targets[3:, 4] = 1, 0  # three positives: some resamples draw none of them
    intervals = auc_intervals(probs, targets, CLASSES, resamples=200)
    assert intervals["per_class_auc"]["MI"] is None and intervals["per_class_auc"]["HYP"] is not None
    assert intervals["macro_auc"] is not None


def test_seeded_results_are_reproducible():
    probs, targets = ptbxl_like(500)
    assert auc_intervals(probs, targets, CLASSES, seed=4) == auc_intervals(probs, targets, CLASSES, seed=4)
    assert auc_intervals(probs, targets, CLASSES, seed=4) != auc_intervals(probs, targets, CLASSES, seed=5)
    other, _ = ptbxl_like(500, separation=1.0, seed=1)
    assert paired_auc_difference(probs, other, targets, seed=2) == paired_auc_difference(probs, other, targets, seed=2)


def test_identical_models_differ_by_exactly_zero():
    probs, targets = ptbxl_like(500)
    result = paired_auc_difference(probs, probs.copy(), targets)
    assert result["difference"] == 0 and result["interval"] == [0.0, 0.0]


def test_a_clearly_better_model_has_an_interval_above_zero():
    better, targets = ptbxl_like(1000, separation=2.5)
    rng = np.random.default_rng(9)
    worse = (0.7 * better + 0.3 * rng.random(better.shape)).astype(np.float32)  # the same model with noise added
    result = paired_auc_difference(better, worse, targets)
    point = summarise(better, targets, True, CLASSES)["macro_auc"] - summarise(worse, targets, True, CLASSES)["macro_auc"]
    assert result["difference"] == pytest.approx(point, abs=1e-12)
    assert 0 < result["interval"][0] < result["difference"] < result["interval"][1]
    flipped = paired_auc_difference(worse, better, targets)
    assert flipped["difference"] == -result["difference"]
    assert flipped["interval"] == pytest.approx([-result["interval"][1], -result["interval"][0]], abs=1e-12)

