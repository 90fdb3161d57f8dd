"""Residual 1D CNN for multi-lead ECG; build_model(**hparams) rebuilds a checkpoint's model from its saved hparams."""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two same-padded convolutions with batch norm, added to a shortcut that is projected when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride, pad, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(out_channels, out_channels, kernel_size, 1, pad, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm1d(out_channels)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNet1d(nn.Module):
    """Strided stem, stages of residual blocks (each later stage halves the length and doubles the channels),
    then average+max pooling over time and a linear head; any input length works, so it trains on windows."""

    def __init__(self, n_leads: int, n_classes: int, width: int, stages: int, blocks: int, kernel_size: int,
                 stem_kernel_size: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv1d(n_leads, width, stem_kernel_size, 2, stem_kernel_size // 2, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for stage in range(stages):
            out_channels = width * 2**stage
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(ResidualBlock(channels, out_channels, kernel_size, stride))
                channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * channels, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map a batch (B, leads, samples) of normalised signals to logits (B, classes)."""
        h = self.features(x)
        return self.head(torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=1))


def build_model(n_leads: int = 12, n_classes: int = 5, width: int = 32, stages: int = 3, blocks: int = 1,
                kernel_size: int = 7, stem_kernel_size: int = 15, dropout: float = 0.0) -> ResNet1d:
    """Build the ResNet1d; the keyword arguments are its hparams, stored in checkpoints as `model_hparams`."""
    for name, value in (("n_leads", n_leads), ("n_classes", n_classes), ("width", width), ("stages", stages),
                        ("blocks", blocks), ("kernel_size", kernel_size), ("stem_kernel_size", stem_kernel_size)):
        if value < 1:
            raise ValueError(f"model {name} must be >= 1, got {value}")
    return ResNet1d(n_leads, n_classes, width, stages, blocks, kernel_size, stem_kernel_size, dropout)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
