"""Assign records to train / val / test, always keeping each patient's records in one split."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def split_by_folds(folds: pd.Series, val_folds: list[int], test_folds: list[int]) -> np.ndarray:
    """Split names per record from fold numbers (none missing): val and test folds as given, every other fold trains."""
    overlap = set(val_folds) & set(test_folds)
    if overlap:
        raise ValueError(f"folds {sorted(overlap)} are in both --val_folds and --test_folds")
    values = folds.to_numpy(dtype=np.int64)
    split = np.full(len(values), "train", dtype=object)
    split[np.isin(values, val_folds)] = "val"
    split[np.isin(values, test_folds)] = "test"
    return split


def patients_across_splits(patient_ids: pd.Series, folds: pd.Series, split: np.ndarray) -> dict[str, list[int]]:
    """The patients whose records land in more than one split, in table order, with the folds they carry."""
    frame = pd.DataFrame({"patient": patient_ids.to_numpy(), "fold": folds.to_numpy(), "split": split})
    splits_per_patient = frame.groupby("patient", sort=False)["split"].nunique()
    spread = frame[frame["patient"].isin(splits_per_patient.index[splits_per_patient > 1])]
    return {patient: sorted(int(f) for f in group.unique())
            for patient, group in spread.groupby("patient", sort=False)["fold"]}


def split_random(
    patient_ids: pd.Series, y: np.ndarray, val_frac: float, test_frac: float, seed: int
) -> np.ndarray:
    """Patient-grouped split by fractions, stratified greedily over the label columns of y.

    Patients are visited rarest-label first (ties in seeded random order); each goes to the split
    that is furthest below its target share of that patient's labels, so rare classes spread
    over all splits as far as the patient groups allow.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"--val_frac {val_frac} and --test_frac {test_frac} must be in [0, 1) and sum below 1")
    names = np.array(["train", "val", "test"], dtype=object)
    targets = np.array([1 - val_frac - test_frac, val_frac, test_frac])
    codes, groups = pd.factorize(patient_ids)
    n_groups = len(groups)
    group_labels = np.zeros((n_groups, y.shape[1]))
    np.add.at(group_labels, codes, y)
    group_sizes = np.bincount(codes, minlength=n_groups)
    class_totals = group_labels.sum(axis=0)
    rarity = np.where(group_labels > 0, class_totals, np.inf).min(axis=1)
    rng = np.random.default_rng(seed)
    visit = np.lexsort((rng.random(n_groups), rarity))

    label_have = np.zeros((3, y.shape[1]))
    size_have = np.zeros(3)
    assigned = np.empty(n_groups, dtype=np.int64)
    for g in visit:
        label_want = targets[:, None] * class_totals[None, :] - label_have
        size_want = targets * len(codes) - size_have
        present = group_labels[g] > 0
        score = label_want[:, present].sum(axis=1) if present.any() else size_want
        score = np.where(targets > 0, score + 1e-9 * size_want, -np.inf)
        choice = int(np.argmax(score))
        assigned[g] = choice
        label_have[choice] += group_labels[g]
        size_have[choice] += group_sizes[g]
    return names[assigned[codes]]


def patient_folds(patient_ids: Sequence | np.ndarray, n_folds: int, seed: int = 0,
                  y: np.ndarray | None = None) -> np.ndarray:
    """Fold 0..n_folds-1 per record, keeping each patient in one fold.

    Patients are placed largest first (ties in seeded random order), each into the fold that holds
    the smallest share of the records and, when y (N, C) is given, of the positives of the classes
    that patient has.
    """
    codes, groups = pd.factorize(pd.Series(patient_ids).astype(str))
    counts = np.ones((len(codes), 1)) if y is None else np.column_stack([np.ones(len(codes)), y])
    load = np.zeros((len(groups), counts.shape[1]))
    np.add.at(load, codes, counts)
    weight = 1.0 / np.maximum(load.sum(axis=0), 1.0)
    order = np.lexsort((np.random.default_rng(seed).random(len(groups)), -load[:, 0]))
    fold_load = np.zeros((n_folds, load.shape[1]))
    fold_of_group = np.empty(len(groups), dtype=np.int64)
    for g in order:
        fold = int(np.argmin(fold_load @ (weight * (load[g] > 0))))
        fold_of_group[g] = fold
        fold_load[fold] += load[g]
    return fold_of_group[codes]
