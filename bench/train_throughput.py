"""Samples/s of the training loop in common/train.py against a plain Dataset + DataLoader loop.

Both train the same default model on the same records (synthetic random ones, or a data dir's train split)
with random 2.5 s windows and per-lead z-scoring; the DataLoader loop crops and normalises one record per
__getitem__ and batches with the default collate. Each is timed on its data pipeline alone (no model) and on
full training steps; the ratios come last.

    python bench/train_throughput.py
    python bench/train_throughput.py --data_dir results/baseline --batches 40 --loader_workers 2
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.augment import window_samples  # noqa: E402
from common.model import build_model  # noqa: E402
from common.train import (BatchMaker, Dist, StopFlag, TrainConfig, TrainState, batch_stream,  # noqa: E402
                          epoch_batches, epoch_rows, load_data, train_epoch)


class PerSampleDataset(Dataset):
    """The usual way: one record per __getitem__, cropped at a random offset and z-scored in numpy."""

    def __init__(self, X: np.ndarray, y: np.ndarray, norm: dict, window: int):
        self.X, self.y, self.window = X, y, window
        self.mean, self.std = np.asarray(norm["mean"])[:, None], np.asarray(norm["std"])[:, None]

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = np.random.randint(0, self.X.shape[-1] - self.window + 1)
        x = (self.X[i, :, start:start + self.window] - self.mean) / self.std
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(np.asarray(self.y[i]))


def samples_per_second(run: Callable[[Iterator], None], batches: Iterable, warmup: int, timed_samples: int) -> float:
    """run() first takes `warmup` batches untimed, then the rest, timed."""
    remaining = iter(batches)
    run(itertools.islice(remaining, warmup))
    started = time.perf_counter()
    run(remaining)
    return timed_samples / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", help="use this data dir's train split instead of synthetic records")
    p.add_argument("--records", type=int, default=4096, help="synthetic records")
    p.add_argument("--length", type=int, default=1000, help="synthetic record length (samples)")
    p.add_argument("--fs", type=float, default=100.0, help="synthetic sampling rate (Hz)")
    p.add_argument("--batches", type=int, default=25, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--loader_workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--workers", type=int, default=0, help="background threads of the common/train.py loop")
    args = p.parse_args()

    cfg, device = TrainConfig(), torch.device("cpu")
    torch.set_flush_denormal(True)
    if args.data_dir:
        data = load_data(args.data_dir, cfg.window_seconds)
        X, y, norm, fs = data.X["train"], data.y["train"], data.norm, data.input_shape["fs"]
    else:
        rng = np.random.default_rng(cfg.seed)
        X = rng.standard_normal((args.records, 12, args.length), dtype=np.float32)
        y = (rng.random((args.records, 5)) < 0.3).astype(np.float32)
        norm, fs = {"mean": [0.0] * 12, "std": [1.0] * 12}, args.fs
    multilabel, window = y.ndim == 2, window_samples(cfg.window_seconds, fs)
    n_batches, timed_samples = args.warmup + args.batches, args.batches * cfg.batch_size
    if len(X) < n_batches * cfg.batch_size:
        sys.exit(f"--warmup + --batches need {n_batches * cfg.batch_size} records at batch size "
                 f"{cfg.batch_size}; there are {len(X)}")
    print(f"{len(X)} records of shape {X.shape[1:]}, window {window}, batch {cfg.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.batches} timed batches after {args.warmup}")

    def ours() -> Iterator:
        maker = BatchMaker(X, y, norm, window, fs, cfg.augment, cfg.seed, 0, device)
        batches = epoch_batches(epoch_rows(len(X), cfg.seed, 0), cfg.batch_size, Dist(device))[:n_batches]
        return batch_stream(maker, 0, batches, 0, args.workers)

    def plain() -> Iterator:
        loader = DataLoader(PerSampleDataset(X, y, norm, window), batch_size=cfg.batch_size, shuffle=True,
                            num_workers=args.loader_workers)
        return itertools.islice(loader, n_batches)

    def fresh_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(cfg.seed)
        model = build_model(n_leads=X.shape[1], n_classes=y.shape[1] if multilabel else int(y.max()) + 1,
                            width=cfg.width, stages=cfg.stages, blocks=cfg.blocks, kernel_size=cfg.kernel_size)
        return model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def train_ours() -> Callable[[Iterator], None]:
        model, optimizer = fresh_model()
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        return lambda batches: train_epoch(model, optimizer, scaler, batches, lambda b: cfg.lr, multilabel, None,
                                           Dist(device), StopFlag(), TrainState(), tqdm(disable=True))

    def train_plain() -> Callable[[Iterator], None]:
        model, optimizer = fresh_model()
        loss_fn = F.binary_cross_entropy_with_logits if multilabel else F.cross_entropy

        def run(batches: Iterator) -> None:
            model.train()
            for x, target in batches:
                loss = loss_fn(model(x), target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                loss.item()
        return run

    def consume(batches: Iterator) -> None:
        deque(batches, maxlen=0)

    ours_data = samples_per_second(consume, ours(), args.warmup, timed_samples)
    plain_data = samples_per_second(consume, plain(), args.warmup, timed_samples)
    ours_train = samples_per_second(train_ours(), ours(), args.warmup, timed_samples)
    plain_train = samples_per_second(train_plain(), plain(), args.warmup, timed_samples)
    print(f"{'':20} {'data pipeline':>15} {'training':>10}   (samples/s)")
    print(f"{'common/train.py':20} {ours_data:15.0f} {ours_train:10.0f}")
    print(f"{'Dataset+DataLoader':20} {plain_data:15.0f} {plain_train:10.0f}")
    print(f"{'ratio':20} {ours_data / plain_data:14.1f}x {ours_train / plain_train:9.2f}x")


if __name__ == "__main__":
    main()
