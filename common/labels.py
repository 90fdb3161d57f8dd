"""Targets as 0/1 matrices; numpy only, so the light PDD scripts need not load torch."""
from __future__ import annotations

import numpy as np


def one_hot(y: np.ndarray, n_classes: int, multilabel: bool) -> np.ndarray:
    """Targets as a 0/1 matrix (N, C): multi-hot y as is, class indices expanded."""
    return np.asarray(y, dtype=np.float32) if multilabel else np.eye(n_classes, dtype=np.float32)[y]
