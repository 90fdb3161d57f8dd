"""Two training loops over the same model and records, timed the same way, for the throughput benchmarks:
the pipeline's own (common/data.py batches, common/step.py steps) and the usual Dataset + DataLoader loop.

Both back-propagate random 2.5 s windows, z-scored per lead, through the default model with the same
optimizer and autocast; the timings synchronise the device before reading the clock.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common.config import TrainConfig
from common.cuda_graph import GraphedStep
from common.data import TrainBatches
from common.distributed import Dist
from common.loop import epoch_batches, epoch_rows
from common.model import build_model
from common.step import Step, StopFlag, TrainState, loss_fn, train_epoch


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


@dataclass
class Timing:
    """Samples per second of one loop, and the GPU's busy fraction while it ran (None on a CPU)."""
    samples_per_second: float
    gpu_busy: float | None


class BusySampler:
    """Samples the GPU's utilisation (NVML, through torch) every `every` seconds in a thread."""

    def __init__(self, device: torch.device, every: float = 0.05):
        self.device, self.every, self.samples = device, every, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.done.wait(self.every):
            self.samples.append(torch.cuda.utilization(self.device))

    def __enter__(self) -> BusySampler:
        if self.device.type == "cuda":
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    @property
    def busy(self) -> float | None:
        return float(np.mean(self.samples)) / 100 if self.samples else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(n_leads: int, n_classes: int, cfg: TrainConfig, device: torch.device) -> tuple:
    """The default model and its optimizer, seeded."""
    torch.manual_seed(cfg.seed)
    model = build_model(n_leads=n_leads, n_classes=n_classes, width=cfg.width, stages=cfg.stages, blocks=cfg.blocks,
                        kernel_size=cfg.kernel_size).to(device)
    return model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def timed(run: callable, samples: int, device: torch.device) -> Timing:
    """Time run() (already warmed up), synchronising the device before and after."""
    sync(device)
    with BusySampler(device) as sampler:
        started = time.perf_counter()
        run()
        sync(device)
        seconds = time.perf_counter() - started
    return Timing(samples / seconds, sampler.busy)


def our_loop(batches_of: TrainBatches, n_classes: int, multilabel: bool, cfg: TrainConfig, device: torch.device,
             amp_dtype: torch.dtype | None, n_batches: int, warmup: int,
             cuda_graphs: bool = False) -> tuple[Timing, Timing]:
    """(data path alone, full training steps) of the pipeline's loop over `n_batches` batches after `warmup`,
    its steps replayed as a CUDA graph when asked."""
    epoch = epoch_batches(epoch_rows(len(batches_of.y), cfg.seed, 0), cfg.batch_size, Dist(device))
    rows = [epoch[b % len(epoch)] for b in range(warmup + n_batches)]  # wraps around a small train split
    model, optimizer = fresh_model(batches_of.mean.shape[1], n_classes, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    graphed = GraphedStep(model, optimizer, partial(loss_fn, multilabel=multilabel), amp_dtype) if cuda_graphs else None

    def stream(first: int, last: int) -> Iterator:
        return ((b, *batches_of.get_batch(0, b, rows[b])) for b in range(first, last))

    def steps(first: int, last: int) -> None:
        step = Step(model, optimizer, scaler, amp_dtype, multilabel, Dist(device), graphed=graphed)
        train_epoch(step, stream(first, last), lambda b: cfg.lr, StopFlag(), TrainState(batches_done=first),
                    tqdm(disable=True))

    def data_only() -> None:
        for _ in stream(warmup, warmup + n_batches):
            pass

    samples = sum(len(r) for r in rows[warmup:])
    steps(0, warmup)
    return timed(data_only, samples, device), timed(lambda: steps(warmup, warmup + n_batches), samples, device)


def dataloader_loop(X: np.ndarray, y: np.ndarray, norm: dict, window: int, cfg: TrainConfig, device: torch.device,
                    amp_dtype: torch.dtype | None, n_batches: int, warmup: int, workers: int,
                    pin_memory: bool) -> Timing:
    """Full training steps of the usual loop: DataLoader(workers, pin_memory), copy per batch, loss.item()."""
    multilabel = y.ndim == 2
    model, optimizer = fresh_model(X.shape[1], y.shape[1] if multilabel else int(y.max()) + 1, cfg, device)
    loader = DataLoader(PerSampleDataset(X, y, norm, window), batch_size=cfg.batch_size, shuffle=True,
                        num_workers=workers, pin_memory=pin_memory and device.type == "cuda",
                        persistent_workers=workers > 0)
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epochs after epochs

    def steps(count: int) -> None:
        model.train()
        for _ in range(count):
            x, target = next(batches)
            x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            loss = loss_fn(logits, target, multilabel)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()

    steps(warmup)
    return timed(lambda: steps(n_batches), n_batches * cfg.batch_size, device)
