"""Which torch device a run uses: one rule for training and scoring."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; cpu and cuda as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
