"""Vectorised batch transforms on (B, leads, samples) tensors: normalisation, windows and ECG augmentation."""
from __future__ import annotations

import math

import torch


def window_samples(seconds: float, fs: float) -> int:
    """Window length in samples for `seconds` at sampling rate `fs` (2.5 s at 100 Hz -> 250)."""
    return int(round(seconds * fs))


def normalise(x: torch.Tensor, norm: dict) -> torch.Tensor:
    """Per-lead z-score (x - mean) / std with the train statistics of meta.json's "normalisation"."""
    mean = torch.as_tensor(norm["mean"], dtype=x.dtype, device=x.device)[:, None]
    std = torch.as_tensor(norm["std"], dtype=x.dtype, device=x.device)[:, None]
    return (x - mean) / std


def sliding_window_starts(length: int, window: int, stride: int) -> torch.Tensor:
    """Window starts every `stride` samples plus one flush with the end, so every sample is covered."""
    if not 1 <= window <= length:
        raise ValueError(f"window of {window} samples does not fit records of {length} samples")
    starts = list(range(0, length - window + 1, max(stride, 1)))
    if starts[-1] != length - window:
        starts.append(length - window)
    return torch.tensor(starts)


def sliding_windows(x: torch.Tensor, starts: torch.Tensor, window: int) -> torch.Tensor:
    """All windows at `starts` of every record: (B, leads, T) -> (B * len(starts), leads, window), record-major."""
    batch, leads, _ = x.shape
    index = starts[:, None] + torch.arange(window, device=starts.device)
    windows = x[:, :, index]
    return windows.permute(0, 2, 1, 3).reshape(batch * len(starts), leads, window)


def augment(x: torch.Tensor, fs: float, generator: torch.Generator) -> torch.Tensor:
    """Random per-lead amplitude scaling (±20 %), Gaussian noise and baseline wander (0.05-0.5 Hz) on a
    normalised batch, magnitudes in units of a lead's train std. (Zeroing random leads lowered PTB-XL AUC.)"""
    batch, leads, length = x.shape
    where = generator.device  # draws happen where the generator lives; the result lands on x's device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=where)

    scale = 0.8 + 0.4 * uniform(batch, leads, 1)
    noise = 0.05 * uniform(batch, 1, 1) * torch.randn(batch, leads, length, generator=generator, device=where)
    t = torch.arange(length, device=where) / fs
    freq = 0.05 + 0.45 * uniform(batch, 1, 1)
    phase = 2 * math.pi * uniform(batch, leads, 1)
    wander = 0.2 * uniform(batch, leads, 1) * torch.sin(2 * math.pi * freq * t + phase)
    return x * scale.to(x.device) + noise.to(x.device) + wander.to(x.device)
