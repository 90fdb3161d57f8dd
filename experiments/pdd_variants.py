"""The PDD experiment's variants: the training options each sets, their order, what each needs, budget epochs."""
from __future__ import annotations

ONLINE = {  # online variants: the train_1d_baseline.py options each sets over the experiment's own
    "dbpd": {"pdd": "dbpd"},
    "dbpd_last": {"pdd": "dbpd", "pdd_scores": "last"},
    "srd": {"pdd": "srd"},
    "smrd": {"pdd": "smrd"},
    "infobatch": {"pdd": "infobatch"},
    "dbpd_bn_update": {"pdd": "dbpd", "pdd_bn": "update"},
    **{f"srd_g{gamma}_r{revision}": {"pdd": "srd", "pdd_gamma": gamma, "revision_frac": revision}
       for gamma in (0.8, 0.85) for revision in (0.1, 0.2)},
}
HALF_SCHEDULE = {  # online settings run for half the experiment's epochs, the one-cycle schedule as short
    "dbpd_last_half": ONLINE["dbpd_last"],
    **{f"infobatch_half_r{ratio}": {"pdd": "infobatch", "pdd_ratio": ratio} for ratio in (0.5, 0.6, 0.7)},
}
VARIANTS = ("baseline", "staged", *ONLINE, *HALF_SCHEDULE, "budget")
DEFAULT_VARIANTS = ("baseline", "staged", "dbpd", "dbpd_last", "srd", "smrd", "infobatch", "budget")
NEEDS = {"staged": "baseline", "smrd": "dbpd"}


def budget_epochs(samples_backpropagated: int, n_train: int, full: int) -> int:
    """Whole epochs of the plain recipe costing what a run back-propagated (at least 1, below the full run's)."""
    return min(max(1, round(samples_backpropagated / n_train)), full - 1)
