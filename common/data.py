"""Training batches made where the model trains.

The train split is placed once, in the first of these that fits: GPU memory (when training on CUDA), RAM, or
the memory map itself (rows read per batch). get_batch(epoch, batch, rows) then cuts one random window per
record, z-scores it per lead and augments it on the training device, with a generator seeded by
(seed, epoch, batch, rank): a batch is the same whenever it is made, so a resumed run continues exactly.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import psutil
import torch

from common.augment import augment

PLACEMENTS = ("auto", "device", "ram", "mmap")


def available_memory() -> int:
    """Bytes of memory new allocations can take without swapping (psutil: MemAvailable on Linux, its counterparts on
    macOS and Windows)."""
    return psutil.virtual_memory().available


def choose_placement(nbytes: int, device: torch.device, asked: str, processes_per_node: int = 1) -> tuple[str, str]:
    """Where the train split goes, and why: "device" (CUDA memory, when it takes at most half of the free GPU
    memory), "ram" (at most half of the available RAM across this node's processes), else "mmap"."""
    gib = nbytes / 2**30
    if asked == "mmap":
        return "mmap", "asked for (--placement mmap)"
    if device.type == "cuda" and asked in ("auto", "device"):
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes < free / 2:
            return "device", f"{gib:.2f} GiB fits in {free / 2**30:.1f} GiB of free GPU memory"
        reason = f"{gib:.2f} GiB is more than half of the {free / 2**30:.1f} GiB of free GPU memory"
    elif asked == "device":
        reason = f"--placement device needs CUDA; training on {device.type}"
    else:
        reason = "training on the CPU"
    ram = available_memory()
    if asked != "ram" and nbytes * processes_per_node >= ram / 2:
        return "mmap", f"{reason}, and {gib:.2f} GiB x {processes_per_node} process(es) exceeds half of the " \
                       f"{ram / 2**30:.1f} GiB of available RAM"
    return "ram", reason


class TrainBatches:
    """The train split, placed once, and get_batch: model-ready (x, y) batches on the training device."""

    def __init__(self, X: np.ndarray, y: np.ndarray, norm: dict, window: int, fs: float, augment: bool, seed: int,
                 rank: int, device: torch.device, placement: str):
        self.window, self.fs, self.augment, self.seed, self.rank = window, fs, augment, seed, rank
        self.device, self.placement = device, placement
        self.mean = torch.as_tensor(norm["mean"], dtype=torch.float32, device=device)[None, :, None]
        self.std = torch.as_tensor(norm["std"], dtype=torch.float32, device=device)[None, :, None]
        self.y = torch.from_numpy(np.ascontiguousarray(y)).to(device)
        self.length = X.shape[-1]
        if placement == "device":  # copied in blocks, so the host never holds a second copy
            self.X = torch.empty(X.shape, dtype=torch.float32, device=device)
            for first in range(0, len(X), 1024):
                self.X[first:first + 1024] = torch.from_numpy(np.array(X[first:first + 1024], dtype=np.float32))
        elif placement == "ram":
            self.X = torch.from_numpy(np.array(X, dtype=np.float32))
        else:
            self.X = X

    def generator(self, epoch: int, batch: int) -> torch.Generator:
        """The generator of one batch's windows and augmentation, seeded by (seed, epoch, batch, rank)."""
        state = np.random.SeedSequence([self.seed, epoch, batch, self.rank]).generate_state(1, np.uint64)[0]
        where = self.device if self.placement == "device" else torch.device("cpu")
        return torch.Generator(device=where).manual_seed(int(state))

    def get_batch(self, epoch: int, batch: int, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `batch` of `epoch`: for each of `rows`, a random window, z-scored per lead, augmented if asked;
        only the windows are copied (never whole records), and they travel to the device once."""
        generator = self.generator(epoch, batch)
        offsets = torch.randint(0, self.length - self.window + 1, (len(rows),), generator=generator,
                                device=generator.device)
        host_index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        index = self.to_device(host_index)
        if self.placement == "mmap":
            order = np.argsort(rows)  # ascending rows read the memory map front to back
            records = np.empty((len(rows),) + self.X.shape[1:], dtype=np.float32)
            records[order] = self.X[rows[order]]
            source, picked = torch.from_numpy(records), torch.arange(len(rows))
        else:
            source, picked = self.X, index if self.placement == "device" else host_index
        # every window of every record as a view (no copy); indexing it copies just the chosen windows
        x = self.to_device(source.unfold(2, self.window, 1)[picked, :, offsets.to(source.device)])
        x = (x - self.mean) / self.std
        if self.augment:
            x = augment(x, self.fs, generator)
        return x, self.y[index]

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the training device; to CUDA through pinned memory, so the copy does not make the
        host wait for the GPU."""
        if self.device.type == "cuda" and tensor.device.type == "cpu":
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)


def in_background(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """fn(item) for each item, in order; with workers > 0 computed up to 2 * workers items ahead in threads."""
    if workers == 0:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def batch_stream(data: TrainBatches, epoch: int, batches: list[np.ndarray], first: int,
                 workers: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """(batch number, x, y) for batches[first:] of `epoch`, prepared by `workers` background threads."""
    return in_background(lambda b: (b, *data.get_batch(epoch, b, batches[b])), range(first, len(batches)), workers)
