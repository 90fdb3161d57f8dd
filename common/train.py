"""Train the residual 1D CNN on a data dir (docs/PIPELINE.md): config, input checks, epoch loop, checkpoints, report.

train(cfg): check the config -> continue this command's killed run if ckpt_dir holds one -> load the
--resume / --init_from checkpoint and fill the options left open (resolve_config) -> load and check the data
dir -> claim the run dir (lock; another run there is refused) -> build the model, or restore it
-> per epoch: choose the train rows (epoch_rows; online PDD may take a random subset), back-propagate a random
window of each (train_epoch, batches from common/data.py; online PDD's DBPD first scores each batch and keeps
its hard records), score validation by sliding windows, write last.pt / best.pt / history.csv -> score best.pt
on validation (F1 thresholds) and once on test -> metrics.json, training_curves.png and a printed summary.
Runs unchanged under torchrun (DistributedDataParallel; rank 0 evaluates and writes every file).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.augment import window_samples
from common.checkpoint import (CheckpointError, check_compatible, copy_checkpoint, load_checkpoint,
                               restore_rng_state, rng_state, save_checkpoint)
from common.cuda_graph import GraphedStep, portable_optimizer_state, set_lr
from common.data import PLACEMENTS, TrainBatches, batch_stream, choose_placement
from common.datadir import SPLITS, load_meta, load_split, remove_stale_temp_files, write_json_atomic
from common.device import resolve_device
from common.evaluate import AGGREGATIONS, DEFAULT_AGGREGATION, predict
from common.labels import one_hot
from common.locks import try_lock
from common.metrics import (format_summary, plot_history, plot_roc_curves, summarise, tune_thresholds,
                            write_history_csv)
from common.model import build_model, count_parameters
from common.online_pdd import (PDD_MODES, SCORE_SOURCES, Plan, RecordScores, dbpd_mask, matched_counts,
                               revision_epochs, scoring_logits, true_label_prob)
from common.outputs import check_writable, new_folders


@dataclass
class TrainConfig:
    """Everything a run is configured by; train_1d_baseline.py exposes each field as --<name>."""
    data_dir: str = "results/baseline"
    ckpt_dir: str = "baseline_ckpt"
    epochs: int | None = None             # total epochs of the run (--resume continues up to it); None: a PDD
                                          # stage dir's planned epoch (see planned_epochs), else 15
    schedule_epochs: int | None = None    # one-cycle length; None: the stage plan's, the resumed checkpoint's,
                                          # else `epochs`
    batch_size: int = 128                 # per process
    lr: float = 3e-3                      # peak learning rate of the one-cycle schedule (AdamW)
    weight_decay: float = 1e-2
    window_seconds: float = 2.5           # random training crops; evaluation slides it by half its length
    aggregation: str = DEFAULT_AGGREGATION  # windows -> record: mean_logit | max_prob | mean_prob (see aggregate)
    augment: bool = False                 # random amplitude scaling, noise and baseline wander
    patience: int = 0                     # stop after this many epochs without a better val AUC; 0: never
    width: int = 32                       # model: channels of the first stage, doubled per later stage
    stages: int = 3                       # each later stage halves the length
    blocks: int = 1                       # residual blocks per stage
    kernel_size: int = 7
    dropout: float = 0.0
    seed: int = 0
    device: str = "auto"                  # auto | cpu | cuda
    amp: str = "auto"                     # training steps: auto (on for CUDA) | on (bf16 where supported, else
                                          # fp16) | off | bf16 | fp16; evaluation is always fp32
    workers: int = 0                      # background threads preparing batches (worth it for --placement mmap)
    placement: str = "auto"               # where the train split lives: auto | device (GPU memory) | ram | mmap
    cuda_graphs: str = "auto"             # auto: replay each full batch's step as a CUDA graph (one GPU, no fp16,
                                          # no dbpd or infobatch) | off
    threads: int = 0                      # torch CPU threads; 0: the cores divided by processes per node
    resume: str | None = None             # last.pt to continue; its data dir may differ (same classes/shape)
    init_from: str | None = None          # checkpoint whose weights start a new run
    stop_after_epoch: int | None = None   # end this job after that epoch, resumable: splits a run across jobs
    pdd: str = "none"                     # online Progressive Data Dropout (common/online_pdd.py): none | dbpd |
                                          # srd | smrd | infobatch; each ends with revision epochs on all rows
    pdd_threshold: float = 0.7            # dbpd: back-propagate records whose true-label probability is below it
    pdd_scores: str = "fresh"             # dbpd: fresh (a scoring pass per batch) | last (each record's score at
                                          # its last training forward pass; no extra pass)
    pdd_readmit: float = 0.1              # dbpd last: fraction of the learnt records trained anyway each epoch
    pdd_bn: str = "restore"               # dbpd fresh: restore | update BatchNorm's running stats after scoring
    pdd_ratio: float = 0.5                # infobatch: fraction of the below-mean-loss records left out per epoch
    pdd_delta: float = 0.875              # infobatch: the epochs after this fraction of the run use all records
    pdd_gamma: float = 0.9                # srd: epoch e (from 0) takes ceil(gamma^e * N) random rows
    pdd_match: str | None = None          # smrd: run dir of a finished dbpd run whose per-epoch counts it takes
    revision_frac: float = 0.2            # dbpd/srd/smrd: the last round(frac * epochs) epochs use all rows
    overwrite: bool = False               # replace the run in ckpt_dir (refused otherwise, unless resuming it)
    given: tuple[str, ...] | None = None  # options set on the command line: on --resume every other option in
                                          # INHERITED comes from the resumed run; None (API use): all are given


class ConfigError(ValueError):
    """Bad options or data dir; the message names the fix."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; nothing of that step was saved."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; last.pt holds the state after the batch it arrived in."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class TrainState:
    """The counters a checkpoint carries so that a run continues exactly where it stopped."""
    epoch: int = 0                        # completed epochs
    batches_done: int = 0                 # batches of the next epoch already back-propagated (interrupted)
    epoch_loss_sum: float = 0.0           # sum of batch loss * batch size over those batches
    epoch_samples: int = 0
    samples_backpropagated: int = 0       # all processes, all jobs and stages of the run
    scoring_forward_samples: int = 0      # DBPD's forward passes without grad that chose them, counted likewise
    elapsed_seconds: float = 0.0
    train_seconds: float = 0.0            # of elapsed_seconds, the time spent back-propagating
    best_score: float = float("-inf")     # best validation macro AUC written to best.pt in this run dir
    best_epoch: int = 0
    stopped_early: bool = False           # --patience ended the epochs; only the report may be left to write
    partition: tuple[int, int] = (0, 1)   # batch size and processes the unfinished epoch was cut into batches by
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun) and its device."""
    device: torch.device
    rank: int = 0
    world_size: int = 1
    processes_per_node: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def agree(self, flags: list[int]) -> list[int]:
        """Element-wise max of integer flags over all processes, so every rank takes the same branch."""
        if self.world_size == 1:
            return flags
        tensor = torch.tensor(flags, dtype=torch.int64, device=self.device)
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MAX)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()


@dataclass
class Data:
    """A checked data dir: arrays per split and what training needs from meta.json."""
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    classes: list[str]
    multilabel: bool
    task: str
    norm: dict
    fingerprint: dict
    input_shape: dict                     # leads, length, fs, window (samples)
    signal: dict                          # lead names in channel order and meta.json's "signal" (units, filter)
    full_train: int                       # train records of the data dir a PDD stage was cut from (else its own)
    pdd_split_id: str | None = None       # a PDD stage: the id of the easy/medium/hard split it was cut from


PDD_OPTIONS = ("pdd", "pdd_threshold", "pdd_scores", "pdd_readmit", "pdd_bn", "pdd_ratio", "pdd_delta", "pdd_gamma",
               "pdd_match", "revision_frac")
INHERITED = ("batch_size", "lr", "weight_decay", "window_seconds", "aggregation", "augment", "patience", "dropout",
             "seed", "amp", *PDD_OPTIONS)
DEFAULT_EPOCHS = 15  # chosen on validation over 30 (bench/recipe_search_dev100.md)
RUN_FILES = ("last.pt", "best.pt", "history.csv", "metrics.json", "training_curves.png", "roc_curves.png")
REQUIRED_META = ("classes", "multilabel", "fs", "length", "leads", "normalisation", "fingerprint")
FLOAT_OPTIONS = tuple(f.name for f in fields(TrainConfig) if f.type == "float")
ARCHITECTURE = ("width", "stages", "blocks", "kernel_size")  # a checkpoint's model; dropout may change on resume


def check_config(cfg: TrainConfig) -> None:
    """Reject impossible options before any data is read, naming every problem at once."""
    problems = [f"--{name} must be >= {low}, got {getattr(cfg, name)}"
                for name, low in (("epochs", 1), ("batch_size", 1), ("width", 1), ("stages", 1), ("blocks", 1),
                                  ("kernel_size", 1), ("patience", 0), ("workers", 0), ("threads", 0),
                                  ("schedule_epochs", 1), ("stop_after_epoch", 1))
                if getattr(cfg, name) is not None and getattr(cfg, name) < low]
    problems += [f"--{name} must be a finite number, got {getattr(cfg, name)}"
                 for name in FLOAT_OPTIONS if not math.isfinite(getattr(cfg, name))]
    if cfg.kernel_size % 2 == 0:
        problems.append(f"--kernel_size must be odd (a same-padded convolution keeps the length only then), got "
                        f"{cfg.kernel_size}; use 3, 5 or 7")
    problems += [f"--{name} must be > 0, got {getattr(cfg, name)}"
                 for name in ("lr", "window_seconds") if getattr(cfg, name) <= 0]
    if cfg.weight_decay < 0 or not 0 <= cfg.dropout < 1:
        problems.append("--weight_decay must be >= 0 and --dropout in [0, 1)")
    problems += [f"--{name} {path} is not a file; pass the last.pt or best.pt of a run dir"
                 for name, path in (("resume", cfg.resume), ("init_from", cfg.init_from))
                 if path and not Path(path).is_file()]
    if cfg.resume and cfg.init_from:
        problems.append("--resume and --init_from exclude each other: --resume continues a run (weights, "
                        "optimizer, epoch count), --init_from starts a new run from weights only")
    if cfg.device not in ("auto", "cpu", "cuda"):
        problems.append(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    elif cfg.device == "cuda" and not torch.cuda.is_available():
        problems.append("--device cuda but this torch sees no CUDA device; use --device cpu")
    if cfg.cuda_graphs not in ("auto", "off"):
        problems.append(f"--cuda_graphs must be auto or off, got {cfg.cuda_graphs!r}")
    if cfg.placement not in PLACEMENTS:
        problems.append(f"--placement must be one of {', '.join(PLACEMENTS)}, got {cfg.placement!r}")
    if cfg.amp not in AMP_MODES:
        problems.append(f"--amp must be one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
    if cfg.aggregation not in AGGREGATIONS:
        problems.append(f"--aggregation must be one of {', '.join(AGGREGATIONS)}, got {cfg.aggregation!r}")
    problems += check_pdd_options(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def check_pdd_options(cfg: TrainConfig) -> list[str]:
    """Problems with the online PDD options: ranges, --pdd_match exactly for smrd, no dbpd or infobatch under
    torchrun."""
    problems = []
    if cfg.pdd not in PDD_MODES:
        problems.append(f"--pdd must be one of {', '.join(PDD_MODES)}, got {cfg.pdd!r}")
    if not all(0 <= v <= 1 for v in (cfg.pdd_threshold, cfg.revision_frac, cfg.pdd_readmit)) \
            or not 0 < cfg.pdd_gamma <= 1:
        problems.append("--pdd_threshold, --pdd_readmit and --revision_frac must be in [0, 1], --pdd_gamma in (0, 1]")
    if not 0 <= cfg.pdd_ratio < 1 or not 0 < cfg.pdd_delta < 1:
        problems.append(f"--pdd_ratio must be in [0, 1) (1 would leave out every low-loss record and weight the "
                        f"others by 1/0) and --pdd_delta in (0, 1), got {cfg.pdd_ratio} and {cfg.pdd_delta}")
    if cfg.pdd_scores not in SCORE_SOURCES or cfg.pdd_bn not in ("restore", "update"):
        problems.append(f"--pdd_scores must be one of {', '.join(SCORE_SOURCES)} and --pdd_bn restore or update")
    if cfg.pdd == "smrd" and not cfg.pdd_match:
        problems.append("--pdd smrd needs --pdd_match RUN_DIR (a finished --pdd dbpd run)")
    if cfg.pdd != "smrd" and cfg.pdd_match:
        problems.append(f"--pdd_match is for --pdd smrd only; drop it from --pdd {cfg.pdd}")
    if cfg.pdd in ("dbpd", "infobatch") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        problems.append(f"--pdd {cfg.pdd} runs in one process only: under torchrun each rank would keep a different "
                        "number of samples or know only its own records' losses; run it without torchrun (srd and "
                        "smrd work under torchrun)")
    return problems


def load_data(data_dir: str | Path, window_seconds: float) -> Data:
    """Load and check a data dir, its arrays memory-mapped (TrainBatches places the train split)."""
    if not Path(data_dir).is_dir():
        raise ConfigError(f"--data_dir {data_dir} does not exist; create it with preprocess.py or fix the path")
    meta = data_meta(data_dir)
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ConfigError(f"{data_dir}/meta.json lacks {missing}; re-run preprocess.py")
    classes, n_leads, length, fs = list(meta["classes"]), len(meta["leads"]), int(meta["length"]), meta["fs"]
    norm = meta["normalisation"]
    std = np.asarray(norm["std"], dtype=np.float64)
    if len(norm["mean"]) != n_leads or len(std) != n_leads or not np.all(np.isfinite(norm["mean"])) \
            or not np.all(std > 0):
        raise ConfigError(f"{data_dir}/meta.json normalisation needs {n_leads} finite means and positive stds; "
                          "re-run preprocess.py")
    window = window_samples(window_seconds, fs)
    if not 1 <= window <= length:
        raise ConfigError(f"--window_seconds {window_seconds} is {window} samples at {fs} Hz but records have "
                          f"{length}; use at most {length / fs:g} s")
    X, y = {}, {}
    for split in SPLITS:
        try:
            X[split], y[split] = load_split(data_dir, split)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        check_split(split, X[split], y[split], n_leads, length, len(classes), bool(meta["multilabel"]))
        bad = first_non_finite(X[split])
        if bad is not None:
            raise ConfigError(f"X_{split}.npy in {data_dir} has NaN/Inf values (first in row {bad}); repair or drop "
                              "those records and re-run preprocess.py")
        y[split] = y[split].astype(np.float32 if meta["multilabel"] else np.int64)
    targets = one_hot(y["val"], len(classes), bool(meta["multilabel"])).sum(axis=0)
    if not np.any((targets > 0) & (targets < len(y["val"]))):
        raise ConfigError(f"no class has both positive and negative records in {data_dir} val split, so the "
                          "validation macro AUC that selects best.pt is undefined; make a larger val split")
    return Data(X=X, y=y, classes=classes, multilabel=bool(meta["multilabel"]), task=str(meta.get("task", "")),
                norm=norm, fingerprint=meta["fingerprint"], pdd_split_id=meta.get("pdd", {}).get("split_id"),
                input_shape={"leads": n_leads, "length": length, "fs": fs, "window": window},
                signal={"leads": list(meta["leads"]), **meta.get("signal", {})},
                full_train=source_train_records(meta, len(X["train"])))


def data_meta(data_dir: str | Path) -> dict:
    """meta.json of a data dir; a corrupt one is a ConfigError naming it (a missing one FileNotFoundError)."""
    try:
        return load_meta(data_dir)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def first_non_finite(X: np.ndarray, chunk_bytes: int = 1 << 26) -> int | None:
    """Index of the first record holding NaN/Inf, else None; reads a memory map in bounded chunks."""
    rows = max(1, chunk_bytes // max(X[0].nbytes, 1))
    for first in range(0, len(X), rows):
        finite = np.isfinite(X[first:first + rows]).reshape(min(rows, len(X) - first), -1).all(axis=1)
        if not finite.all():
            return first + int(np.argmin(finite))
    return None


def source_train_records(meta: dict, n_train: int) -> int:
    """Train records of the data dir a PDD stage was cut from (the unit of effective epochs), read from that dir's
    meta.json when it is still there and unchanged; else n_train, this dir's own."""
    stage = meta.get("pdd", {})
    source = Path(stage.get("source_data_dir", "")) / "meta.json"
    if stage.get("source_fingerprint") and source.is_file():
        with contextlib.suppress(ValueError, KeyError, OSError):
            if load_meta(source.parent)["fingerprint"]["dataset"] == stage["source_fingerprint"]:
                return len(load_split(source.parent, "train")[1])
    return n_train


def check_split(split: str, X: np.ndarray, y: np.ndarray, n_leads: int, length: int, n_classes: int,
                multilabel: bool) -> None:
    """Check one split's arrays against meta.json: non-empty, (N, leads, length) signals, targets per task."""
    if len(X) == 0:
        raise ConfigError(f"the {split} split is empty; re-run preprocess.py with other split fractions")
    if X.ndim != 3 or X.shape[1:] != (n_leads, length):
        raise ConfigError(f"X_{split}.npy has shape {X.shape} but meta.json says (N, {n_leads}, {length}); "
                          "re-run preprocess.py")
    if multilabel and y.shape != (len(X), n_classes):
        raise ConfigError(f"y_{split}.npy has shape {y.shape}; a multi-label task needs multi-hot "
                          f"({len(X)}, {n_classes}) for the {n_classes} classes in meta.json")
    if not multilabel and (y.ndim != 1 or y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= n_classes):
        raise ConfigError(f"y_{split}.npy ({y.dtype}, shape {y.shape}) must hold class indices 0..{n_classes - 1} "
                          "(N,) for a single-label task")


def init_distributed(device_name: str) -> Dist:
    """Join the torchrun job if there is one (gloo on CPU, nccl on CUDA) and pick this process's device."""
    cuda = resolve_device(device_name).type == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    local_rank = int(os.environ["LOCAL_RANK"])
    if cuda:
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(device=torch.device("cuda", local_rank) if cuda else torch.device("cpu"),
                rank=torch_dist.get_rank(), world_size=world_size,
                processes_per_node=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


AMP_MODES = ("auto", "on", "off", "bf16", "fp16")


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of training steps: None when off (auto = on for CUDA only); on = bf16 where supported, else
    fp16 (with a GradScaler); bf16 and fp16 force that type. Evaluation never autocasts."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or (device.type == "cuda" and amp != "bf16" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def one_cycle_lr(progress: float, peak: float, warmup: float = 0.3) -> float:
    """Learning rate at `progress` (fraction of the schedule, clamped to [0, 1]): cosine rise from peak/25 to
    peak over the first 30 %, cosine fall to peak/1e4 after (OneCycleLR's shape, as a pure function so that a
    resumed run, even on another train subset, lands on the same schedule without scheduler state)."""
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        start, end, t = peak / 25, peak, p / warmup
    else:
        start, end, t = peak, peak / 1e4, (p - warmup) / (1 - warmup)
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def epoch_rows(n_train: int, seed: int, epoch: int, keep: int | None = None) -> np.ndarray:
    """Train rows of `epoch`, in order: the first `keep` (default all) of a permutation seeded by (seed, epoch),
    so an online PDD subset is random, and the same when the epoch is resumed."""
    return np.random.default_rng([seed, epoch]).permutation(n_train)[:keep]


def epoch_batches(rows: np.ndarray, batch_size: int, dist: Dist) -> list[np.ndarray]:
    """This process's batches: a disjoint, equal share of `rows` (the remainder modulo processes is dropped)."""
    usable = len(rows) - len(rows) % dist.world_size
    mine = rows[:usable][dist.rank::dist.world_size]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


@dataclass
class StopFlag:
    """The number of the SIGINT/SIGTERM received (0: none); the loop checks it after every batch."""
    signum: int = 0


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Turn SIGINT/SIGTERM into a StopFlag while training; a second signal acts as it normally would."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        flag.signum = signum
        signal.signal(signum, previous[signum])

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def loss_fn(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Sigmoid + binary cross-entropy for multi-hot targets, softmax + cross-entropy for class indices."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, y) if multilabel else F.cross_entropy(logits, y)


CHECK_EVERY = 50  # batches between the loop's host syncs (NaN/Inf check, stop flag across processes)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                batches: Iterable[tuple[int, torch.Tensor, torch.Tensor]], lr_at: Callable[[int], float],
                multilabel: bool, amp_dtype: torch.dtype | None, dist: Dist, stop: StopFlag, state: TrainState,
                bar: tqdm, threshold: float | None = None, graphed: GraphedStep | None = None,
                scores: RecordScores | None = None, restore_bn: bool = True) -> None:
    """Back-propagate (batch number, x, y) batches. Losses stay on the device; every CHECK_EVERY batches, at the
    epoch's end, and as soon as a signal arrived, they are fetched at once (one host sync), checked, and folded
    into `state`. With a DBPD `threshold`, each batch is first scored without grad and only its hard records
    are back-propagated (none: no step at all; `restore_bn` puts BatchNorm's running stats back after scoring).
    With `scores`, each batch's loss is weighted per record and each record's score kept (infobatch, dbpd
    --pdd_scores last). With `graphed`, full batches replay a captured CUDA graph of the step
    (common/cuda_graph.py). Raises NonFiniteLossError when a loss was NaN/Inf (the state on disk is the last good
    checkpoint), TrainingInterrupted at the check after a signal came."""
    model.train()
    pending: list[tuple[int, torch.Tensor, int, float]] = []  # (batch, loss on the device, records, lr)
    seen = state.batches_done  # batches of this epoch done, checked or not

    def check(signum: int) -> None:
        values = torch.stack([loss for _, loss, _, _ in pending]).tolist() if pending else []
        bad = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
        non_finite, signum = dist.agree([int(bad is not None), signum])
        if non_finite:
            b, _, _, lr = pending[bad] if bad is not None else pending[-1]
            raise NonFiniteLossError(
                f"training loss became {values[bad] if bad is not None else 'NaN/Inf in another process'} at epoch "
                f"{state.epoch + 1}, batch {b + 1} (lr {lr:.3g}); the last checkpoint written before it is kept. "
                "Check the data for NaN/Inf values, or lower --lr, or use --amp off")
        state.batches_done = seen
        if scores is not None:
            scores.fetch()
        for (_, _, n, _), value in zip(pending, values):
            state.epoch_loss_sum += value * n
            state.epoch_samples += n
            state.samples_backpropagated += n * dist.world_size
        if values:
            bar.set_postfix(loss=f"{values[-1]:.4f}", lr=f"{pending[-1][3]:.2e}", refresh=False)
        pending.clear()
        if signum:
            raise TrainingInterrupted(signum)

    for b, x, y in batches:
        lr = lr_at(b)
        set_lr(optimizer, lr)
        scored = len(y)
        if threshold is not None:
            keep = dbpd_mask(true_label_prob(scoring_logits(model, x, amp_dtype, restore_bn), y, multilabel),
                             threshold)
            x, y = x[keep], y[keep]
            state.scoring_forward_samples += scored * dist.world_size
        if graphed is not None and graphed.fits(x, y):
            pending.append((b, graphed(x, y), len(y), lr))
        elif len(y):
            with torch.autocast(dist.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            loss = loss_fn(logits, y, multilabel) if scores is None else scores.loss(b, logits, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            pending.append((b, loss.detach(), len(y), lr))
        seen = b + 1
        bar.update(scored)
        if len(pending) >= CHECK_EVERY or (dist.world_size == 1 and stop.signum):
            check(stop.signum)
    check(stop.signum)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class Run:
    """A training run in this process: what it mutates and checkpoints, and what it was started with."""
    cfg: TrainConfig
    data: Data
    dist: Dist
    model: nn.Module                      # DistributedDataParallel-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler          # enabled for fp16 autocast only
    amp_dtype: torch.dtype | None
    hparams: dict
    plan: Plan                            # online PDD: the rows of each epoch
    state: TrainState
    source: str | None                    # the checkpoint it started from, if any
    graphed: GraphedStep | None = None    # the captured training step (common/cuda_graph.py), on one GPU
    scores: RecordScores | None = None    # each record's last training score (infobatch, dbpd --pdd_scores last)
    job_started: float = field(default_factory=time.time)
    elapsed_before: float = 0.0           # elapsed_seconds of earlier jobs of this run

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.job_started

    def score(self, split: str) -> np.ndarray:
        """Record probabilities of a split, by the same sliding-window predict the difficulty stage uses."""
        return predict(unwrap(self.model), self.data.X[split], self.data.norm, self.data.multilabel,
                       self.data.input_shape["window"], batch_size=4 * self.cfg.batch_size, device=self.dist.device,
                       aggregation=self.cfg.aggregation)

    def checkpoint(self) -> dict:
        """Everything needed to continue exactly, or to rebuild and use the model (common.checkpoint)."""
        self.state.elapsed_seconds = self.elapsed()
        return {
            "model": unwrap(self.model).state_dict(), "model_hparams": self.hparams,
            "optimizer": portable_optimizer_state(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "state": asdict(self.state), "rng": rng_state(self.dist.device),
            "record_scores": self.scores.state_dict() if self.scores is not None else None,
            "schedule_epochs": self.cfg.schedule_epochs,
            "classes": self.data.classes, "task": self.data.task, "multilabel": self.data.multilabel,
            "normalisation": self.data.norm, "input_shape": self.data.input_shape, "signal": self.data.signal,
            "aggregation": self.cfg.aggregation,
            "data_dir": str(self.cfg.data_dir), "data_fingerprint": self.data.fingerprint,
            "pdd_split_id": self.data.pdd_split_id,
            "config": asdict(self.cfg), "torch_version": str(torch.__version__),
        }


def seed_process(seed: int, rank: int) -> None:
    """Seed python, numpy and torch's global generators (dropout draws from torch's) per (seed, rank), so that
    processes of a torchrun job draw different dropout masks."""
    state = np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0]
    random.seed(int(state))
    np.random.seed(int(state % 2**32))
    torch.manual_seed(int(state))


def start_run(cfg: TrainConfig, ckpt: dict | None, data: Data, dist: Dist, log: Callable[..., None]) -> Run:
    """A new run (weights from --init_from if given), or the --resume checkpoint's run continued."""
    source = cfg.resume or cfg.init_from
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    hparams = dict(n_leads=data.input_shape["leads"], n_classes=len(data.classes), width=cfg.width,
                   stages=cfg.stages, blocks=cfg.blocks, kernel_size=cfg.kernel_size, dropout=cfg.dropout)
    if ckpt is not None:  # its model (resolve_config gave cfg its ARCHITECTURE), with this run's dropout
        hparams = {**ckpt["model_hparams"], "dropout": cfg.dropout}
    model = build_model(**hparams)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.to(dist.device)
    seed_process(cfg.seed, dist.rank)
    amp_dtype = amp_dtype_for(cfg.amp, dist.device)
    run = Run(cfg=cfg, data=data, dist=dist, model=model,
              optimizer=torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
              scaler=torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16),
              amp_dtype=amp_dtype, hparams=hparams, plan=pdd_plan(cfg, len(data.X["train"])), state=TrainState(),
              source=source)
    if run.plan.tracks_records:
        run.scores = RecordScores(len(data.X["train"]), run.plan, data.multilabel)
    if cfg.resume:
        continue_run(run, ckpt, log)
    if cfg.cuda_graphs == "auto" and dist.device.type == "cuda" and dist.world_size == 1 \
            and amp_dtype != torch.float16 and cfg.pdd not in ("dbpd", "infobatch"):
        run.graphed = GraphedStep(model, run.optimizer, partial(loss_fn, multilabel=data.multilabel), amp_dtype)
    if dist.world_size > 1:
        run.model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return run


def pdd_plan(cfg: TrainConfig, n_train: int) -> Plan:
    """The run's online PDD plan; for smrd with the per-epoch counts of the --pdd_match run."""
    try:
        matched = matched_counts(Path(cfg.pdd_match), n_train, cfg.epochs) if cfg.pdd == "smrd" else ()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    revision = revision_epochs(cfg.epochs, 1 - cfg.pdd_delta if cfg.pdd == "infobatch" else cfg.revision_frac)
    if cfg.pdd == "infobatch" and revision == 0:
        raise ConfigError(f"--pdd_delta {cfg.pdd_delta} leaves no full-data epoch in {cfg.epochs} epochs "
                          f"(round({cfg.epochs} * (1 - delta)) = 0); lower --pdd_delta to at most "
                          f"{1 - 0.5 / cfg.epochs:.3f} or train more epochs")
    return Plan(mode=cfg.pdd, epochs=cfg.epochs, revision=revision, threshold=cfg.pdd_threshold, gamma=cfg.pdd_gamma,
                matched=matched, scores=cfg.pdd_scores, readmit=cfg.pdd_readmit, ratio=cfg.pdd_ratio,
                restore_bn=cfg.pdd_bn == "restore")


def continue_run(run: Run, ckpt: dict, log: Callable[..., None]) -> None:
    """Restore optimizer, scaler, counters and RNG from a last.pt, possibly of another run dir or other data."""
    cfg, dist = run.cfg, run.dist
    run.optimizer.load_state_dict(ckpt["optimizer"])
    for group in run.optimizer.param_groups:
        group["weight_decay"] = cfg.weight_decay
    if ckpt["scaler"] is not None and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    run.state = state = TrainState(**{**ckpt["state"], "partition": tuple(ckpt["state"].get("partition", (0, 1)))})
    run.elapsed_before = state.elapsed_seconds
    if dist.world_size == 1:
        restore_rng_state(ckpt["rng"], dist.device)
    else:  # one saved state cannot serve every rank: draw afresh, per rank, from where the run stands
        seed_process(cfg.seed + 1_000_003 * (state.epoch + 1) + state.batches_done, dist.rank)
    changed = [f"--{name} {ckpt['config'][name]} -> {getattr(cfg, name)}" for name in INHERITED
               if name in ckpt["config"] and ckpt["config"][name] != getattr(cfg, name)]
    if changed:
        log(f"options changed from {cfg.resume}'s run: {', '.join(changed)}")
    same_dir = Path(cfg.resume).resolve().parent == Path(cfg.ckpt_dir).resolve()
    if not same_dir:  # a new run dir (next PDD stage): its own best.pt and patience
        state.best_score, state.best_epoch, state.stopped_early = float("-inf"), 0, False
    if state.epoch >= cfg.epochs or state.stopped_early:
        if same_dir and not (Path(cfg.ckpt_dir) / "metrics.json").is_file():
            log(f"{cfg.resume}: training finished at epoch {state.epoch} but the run has no metrics.json "
                "(interrupted during the final evaluation); writing the report")
            return
        if state.stopped_early:
            raise ConfigError(f"{cfg.resume} already stopped early by --patience (epoch {state.epoch}); resume it into "
                              "another --ckpt_dir (a new best.pt and patience count), or start a new run")
        further = (f"--epochs E with E above {state.epoch}" if state.epoch < cfg.schedule_epochs else
                   f"--epochs E --schedule_epochs E with E above {state.epoch}")
        raise ConfigError(f"{cfg.resume} already finished its epochs (epoch {state.epoch}); to train it further pass "
                          f"{further} (its one-cycle schedule ends at epoch {cfg.schedule_epochs}), or start a new run")
    if ckpt["data_fingerprint"] != run.data.fingerprint:
        unfinished = "; its unfinished epoch restarts" if state.batches_done else ""
        log(f"resuming on different data: {ckpt['data_dir']} (dataset fingerprint "
            f"{ckpt['data_fingerprint'].get('dataset', '?')[:12]}) -> {cfg.data_dir} "
            f"({run.data.fingerprint.get('dataset', '?')[:12]}){unfinished}"
            + ("; records' last scores start afresh" if run.scores is not None else ""))
        state.batches_done, state.epoch_loss_sum, state.epoch_samples = 0, 0.0, 0
    elif run.scores is not None and ckpt.get("record_scores") is not None:
        run.scores.load_state_dict(ckpt["record_scores"])
    if state.batches_done and tuple(state.partition) != (cfg.batch_size, dist.world_size):
        size, processes = state.partition
        raise ConfigError(f"{cfg.resume} stopped in the middle of epoch {state.epoch + 1}, after {state.batches_done} "
                          f"batches of {size} records on {processes} process(es); its remaining records are known "
                          f"only for that partition: resume with --batch_size {size} on {processes} process(es)")


def fit_epoch(run: Run, epoch: int, batches_of: TrainBatches, stop: StopFlag) -> dict:
    """Back-propagate the rest of `epoch` (all of it unless resumed mid-epoch) under a progress bar; returns
    its train_loss (NaN when nothing was back-propagated), lr at its end, epoch_backpropagated (all processes)
    and samples_per_second, and marks it done in run.state."""
    cfg, state, n_train = run.cfg, run.state, len(run.data.X["train"])
    rows = epoch_rows(n_train, cfg.seed, epoch, run.plan.rows(epoch, n_train))
    if run.scores is not None:
        rows, weights = run.plan.select(epoch, rows, run.scores.last, cfg.seed)
    batches = epoch_batches(rows, cfg.batch_size, run.dist)
    if run.scores is not None:
        run.scores.start_epoch(batches, rows, weights)
    sizes = [len(batch) for batch in batches]

    def lr_at(b: int) -> float:
        return one_cycle_lr((epoch + b / max(len(batches), 1)) / cfg.schedule_epochs, cfg.lr)

    state.partition = (cfg.batch_size, run.dist.world_size)
    started = time.time()
    with tqdm(total=sum(sizes), initial=sum(sizes[:state.batches_done]), unit="sample", leave=False,
              desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (run.dist.is_main and sys.stderr.isatty())) as bar:
        try:
            train_epoch(run.model, run.optimizer, run.scaler,
                        batch_stream(batches_of, epoch, batches, state.batches_done, cfg.workers), lr_at,
                        run.data.multilabel, run.amp_dtype, run.dist, stop, state, bar,
                        run.plan.batch_threshold(epoch), run.graphed, run.scores, run.plan.restore_bn)
        finally:
            state.train_seconds += time.time() - started
    if run.scores is not None:
        run.scores.end_epoch()
    backpropagated = state.epoch_samples * run.dist.world_size
    stats = {"train_loss": state.epoch_loss_sum / state.epoch_samples if state.epoch_samples else math.nan,
             "lr": lr_at(max(len(batches) - 1, 0)), "epoch_backpropagated": backpropagated,
             "samples_per_second": round(backpropagated / (time.time() - started), 1)}
    state.epoch, state.batches_done, state.epoch_loss_sum, state.epoch_samples = epoch + 1, 0, 0.0, 0
    return stats


def end_epoch(run: Run, stats: dict, started: float, log: Callable[..., None]) -> None:
    """Rank 0: score validation, append the history row, write last.pt (and best.pt when val AUC improved)."""
    state, ckpt_dir = run.state, Path(run.cfg.ckpt_dir)
    val = summarise(run.score("val"), run.data.y["val"], run.data.multilabel, run.data.classes)
    improved = val["macro_auc"] > state.best_score
    if improved:
        state.best_score, state.best_epoch = val["macro_auc"], state.epoch
    row = {"epoch": state.epoch, "train_loss": stats["train_loss"], "val_loss": val["loss"],
           "val_macro_auc": val["macro_auc"], "lr": stats["lr"], "samples_backpropagated": state.samples_backpropagated,
           "seconds": round(run.elapsed(), 2), "epoch_seconds": round(time.time() - started, 2),
           "samples_per_second": stats["samples_per_second"], "train_records": len(run.data.X["train"]),
           "epoch_backpropagated": stats["epoch_backpropagated"],
           "scoring_forward_samples": state.scoring_forward_samples}
    state.history.append(row)
    save_checkpoint(run.checkpoint(), ckpt_dir / "last.pt")
    if improved:
        copy_checkpoint(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
    write_history_csv(ckpt_dir / "history.csv", state.history)
    kept = f" pdd {run.plan.mode} kept {row['epoch_backpropagated']}/{row['train_records']}" \
        if run.plan.mode != "none" else ""
    log(f"epoch {state.epoch}/{run.cfg.epochs}: train_loss {row['train_loss']:.4f} val_loss {row['val_loss']:.4f} "
        f"val_macro_auc {row['val_macro_auc']:.4f} lr {row['lr']:.2e} {row['samples_per_second']:.0f} samples/s "
        f"{row['epoch_seconds']:.0f}s{kept}" + (" *best" if improved else ""))


def resolve_config(cfg: TrainConfig, ckpt: dict | None) -> TrainConfig:
    """Fill what the command line left open. On --resume, options not given come from the resumed run, so it
    continues as it was; from --resume or --init_from, the model is the checkpoint's (checkpoint_architecture).
    --epochs: given, else a PDD stage dir's plan (meta.json "pdd", written by pdd_folder_generator.py), else the
    resumed run's, else DEFAULT_EPOCHS. The one-cycle length: --schedule_epochs, else the
    stage plan's, else the resumed run's, else --epochs; a schedule shorter than the epochs is refused."""
    resumed = ckpt if cfg.resume and ckpt is not None else None
    if resumed is not None and cfg.given is not None:
        before = resumed["config"]
        cfg = replace(cfg, **{name: before[name] for name in INHERITED if name not in cfg.given and name in before})
    if ckpt is not None:
        cfg = checkpoint_architecture(cfg, ckpt)
    meta_path = Path(cfg.data_dir) / "meta.json"
    plan = data_meta(cfg.data_dir).get("pdd", {}) if meta_path.is_file() else {}
    epochs = next(e for e in (cfg.epochs, plan.get("train_until_epoch"),
                              resumed and resumed["config"].get("epochs"), DEFAULT_EPOCHS) if e is not None)
    sources = ((cfg.schedule_epochs, "--schedule_epochs"), (plan.get("schedule_epochs"), f"{meta_path}'s PDD plan"),
               (resumed and resumed["schedule_epochs"], f"{cfg.resume}'s run"), (epochs, "--epochs"))
    schedule, source = next((value, name) for value, name in sources if value is not None)
    if epochs > schedule:
        raise ConfigError(f"--epochs {epochs} runs past the {schedule}-epoch one-cycle schedule of {source}, "
                          f"where the learning rate stays at its floor ({cfg.lr / 1e4:.1e}); pass --schedule_epochs "
                          f"{epochs} (or more) to stretch the schedule, or --epochs {schedule} or fewer")
    if cfg.stop_after_epoch is not None and cfg.stop_after_epoch > epochs:
        raise ConfigError(f"--stop_after_epoch {cfg.stop_after_epoch} is after the run's last epoch {epochs}")
    return replace(cfg, epochs=epochs, schedule_epochs=schedule)


def checkpoint_architecture(cfg: TrainConfig, ckpt: dict) -> TrainConfig:
    """cfg with the model options (ARCHITECTURE) of the checkpoint it starts from, whose weights only fit that
    model; a given option of another value is refused rather than ignored."""
    model, given = ckpt["model_hparams"], cfg.given if cfg.given is not None else ARCHITECTURE
    clash = [name for name in ARCHITECTURE if name in given and getattr(cfg, name) != model[name]]
    if clash:
        theirs = ", ".join(f"--{name} {model[name]}" for name in clash)
        ours = ", ".join(f"--{name} {getattr(cfg, name)}" for name in clash)
        raise ConfigError(f"{cfg.resume or cfg.init_from} holds a model of {theirs}, not the {ours} given; a run "
                          f"started from a checkpoint keeps its model: drop {', '.join(f'--{n}' for n in clash)}, or "
                          "start a new run without --resume/--init_from")
    return replace(cfg, **{name: model[name] for name in ARCHITECTURE})


def train(cfg: TrainConfig) -> dict | None:
    """Run (or continue) training as configured; returns metrics.json's content on rank 0, else None
    (other ranks, or a job ended early by --stop_after_epoch)."""
    check_config(cfg)
    cfg = continue_if_interrupted(cfg)
    source = cfg.resume or cfg.init_from
    ckpt = load_checkpoint(source) if source else None
    cfg = resolve_config(cfg, ckpt)
    dist = init_distributed(cfg.device)
    try:
        return _train(cfg, ckpt, dist)
    finally:
        if dist.world_size > 1:
            torch_dist.destroy_process_group()


NOT_THE_RUN = ("resume", "init_from", "given", "stop_after_epoch", "overwrite", "device", "workers", "threads",
               "placement", "cuda_graphs")


def continue_if_interrupted(cfg: TrainConfig) -> TrainConfig:
    """The same command again after its run was killed continues that run: when ckpt_dir holds a last.pt without
    metrics.json whose options are this command's, resume it (anything else in ckpt_dir is refused later)."""
    last = Path(cfg.ckpt_dir) / "last.pt"
    if cfg.overwrite or not last.is_file() or (last.parent / "metrics.json").exists() \
            or (cfg.resume and Path(cfg.resume).resolve() == last.resolve()):
        return cfg
    busy = try_lock(last.parent)
    if busy is None:  # another process is training there: claim_run_dir refuses this command
        return cfg
    os.close(busy)
    try:
        ckpt = load_checkpoint(last)
    except CheckpointError:
        return cfg
    wanted = asdict(resolve_config(replace(cfg, resume=None, init_from=None), None))
    if any(ckpt["config"].get(name) != value for name, value in wanted.items() if name not in NOT_THE_RUN):
        return cfg
    print(f"{cfg.ckpt_dir} holds this command's interrupted run (epoch {ckpt['state']['epoch']}): continuing it "
          "(pass --overwrite to start afresh)", flush=True)
    return replace(cfg, resume=str(last), init_from=None, given=None)


def ensemble_members(ckpt_dir: Path) -> list[str]:
    """The member folders (seed<k>/, common.ensemble.member_dir) that make ckpt_dir an ensemble dir, sorted."""
    return sorted(p.name for p in ckpt_dir.glob("seed*") if p.name[4:].isdigit() and p.is_dir())


def claim_run_dir(cfg: TrainConfig) -> int:
    """Lock the existing ckpt_dir (flock) for this run's lifetime (the lock goes with the process, even on kill -9);
    refuse an ensemble dir, and a dir holding another run unless --overwrite (its files are then removed) or
    resuming its own last.pt. Returns the lock's file descriptor."""
    ckpt_dir = Path(cfg.ckpt_dir)
    fd = try_lock(ckpt_dir)
    if fd is None:
        raise ConfigError(f"another training run is using {ckpt_dir}; wait for it to end or choose another --ckpt_dir")
    try:
        members = ensemble_members(ckpt_dir)
        if members:
            raise ConfigError(f"{ckpt_dir} is an ensemble dir ({', '.join(f'{m}/' for m in members)} of "
                              "train_1d_baseline.py --seeds), not a single run's; choose another --ckpt_dir, continue "
                              "the ensemble with --seeds, or remove the folder yourself to reuse its name (--overwrite "
                              "does not remove ensemble members)")
        existing = [name for name in RUN_FILES if (ckpt_dir / name).exists()]
        continuing = cfg.resume and Path(cfg.resume).resolve().parent == ckpt_dir.resolve()
        if existing and not continuing:
            if not cfg.overwrite:
                resume = f" continue it with --resume {ckpt_dir / 'last.pt'}," if "last.pt" in existing else ""
                raise ConfigError(f"{ckpt_dir} holds another run ({', '.join(existing)});{resume} choose another "
                                  "--ckpt_dir, or pass --overwrite to replace it")
            for name in existing:
                (ckpt_dir / name).unlink()
        for name in RUN_FILES:  # a run killed while writing one of them
            remove_stale_temp_files(ckpt_dir / name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _train(cfg: TrainConfig, ckpt: dict | None, dist: Dist) -> dict | None:
    log = partial(print, flush=True) if dist.is_main else (lambda *args, **kwargs: None)
    torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0)) // dist.processes_per_node))
    torch.set_flush_denormal(True)  # denormal floats made some CPU batches 10-20x slower
    data = load_data(cfg.data_dir, cfg.window_seconds)
    if ckpt is not None:
        check_compatible(ckpt, cfg.resume or cfg.init_from, data.classes, data.input_shape,
                         "use a checkpoint trained on data with the same classes and input shape, or start a new "
                         "run without --resume/--init_from")
    if cfg.resume:
        check_same_pdd_split(ckpt, cfg.resume, data, cfg.data_dir)
    with run_dir_claimed(cfg, dist):
        return train_and_report(cfg, ckpt, data, dist, log)


@contextlib.contextmanager
def run_dir_claimed(cfg: TrainConfig, dist: Dist) -> Iterator[None]:
    """Rank 0 checks that ckpt_dir can be written (before making any folder, so an unwritable one is refused now,
    not at the first checkpoint), makes it and claims it (claim_run_dir) for the body; every rank raises when rank 0
    could not. A body that fails before writing into the folders made here removes them."""
    refused = None
    with contextlib.ExitStack() as held:
        if dist.is_main:
            try:
                check_writable(Path(cfg.ckpt_dir), "--ckpt_dir", folder=True)
                held.enter_context(new_folders(Path(cfg.ckpt_dir)))
                held.callback(os.close, claim_run_dir(cfg))
            except ValueError as e:
                refused = e if isinstance(e, ConfigError) else ConfigError(str(e))
        if dist.agree([int(refused is not None)])[0]:
            raise refused or ConfigError(f"rank 0 could not claim {cfg.ckpt_dir}")
        yield


def check_same_pdd_split(ckpt: dict, path: str, data: Data, data_dir: str) -> None:
    """Refuse to resume a PDD stage's checkpoint on a stage cut from another easy/medium/hard split (both ids known):
    the stages would not nest, so records the run saw as hard could reappear as easy."""
    trained_on = ckpt.get("pdd_split_id")
    if trained_on and data.pdd_split_id and trained_on != data.pdd_split_id:
        raise ConfigError(f"{path} was trained on a stage of PDD split {trained_on}, but {data_dir} is a stage of "
                          f"split {data.pdd_split_id}; rebuild all stages from one split with pdd_folder_generator.py, "
                          "or start afresh without --resume")


def out_of_memory(run: Run, last: Path) -> ConfigError:
    """The error for a GPU out of memory, after saving a resumable last.pt when an epoch had started."""
    cfg, state, device = run.cfg, run.state, run.dist.device
    seen = ""
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        seen = (f" ({torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB allocated at the peak, of "
                f"{total / 2**30:.1f} GiB)")
    saved = ""
    if run.dist.is_main and (state.epoch or state.batches_done):
        save_checkpoint(run.checkpoint(), last)
        saved = (f"; saved {last}, resume it with --resume {last}" +
                 (f" and the same --batch_size {cfg.batch_size} (stopped mid-epoch)" if state.batches_done else ""))
    return ConfigError(f"out of GPU memory at --batch_size {cfg.batch_size}{seen}: lower --batch_size, or free the "
                       f"GPU of other processes{saved}")


def train_and_report(cfg: TrainConfig, ckpt: dict | None, data: Data, dist: Dist,
                     log: Callable[..., None]) -> dict | None:
    """The epoch loop, then the final report; the run dir is claimed."""
    run = start_run(cfg, ckpt, data, dist, log)
    state, last = run.state, Path(cfg.ckpt_dir) / "last.pt"
    log(f"data {cfg.data_dir}: {len(data.X['train'])} train / {len(data.X['val'])} val / {len(data.X['test'])} test"
        f" records, {'multi' if data.multilabel else 'single'}-label {data.classes}, {data.input_shape}")
    log(f"model {count_parameters(run.model):,} params {run.hparams}; {dist.device} x{dist.world_size}, "
        f"{torch.get_num_threads()} threads, amp {run.amp_dtype}, cuda graphs {'on' if run.graphed else 'off'}; "
        f"epochs {state.epoch + 1}..{cfg.epochs} of a "
        f"{cfg.schedule_epochs}-epoch one-cycle, batch {cfg.batch_size}, lr {cfg.lr:g}, augment {cfg.augment}"
        + (f", from {run.source}" if run.source else ""))
    placement, why = choose_placement(data.X["train"].nbytes, dist.device, cfg.placement, dist.processes_per_node)
    log(f"train split in {placement}: {why}")
    batches_of = TrainBatches(data.X["train"], data.y["train"], data.norm, data.input_shape["window"],
                              data.input_shape["fs"], cfg.augment, cfg.seed, dist.rank, dist.device, placement)
    resume_hint = (f"continue with: python train_1d_baseline.py --data_dir {cfg.data_dir} --ckpt_dir {cfg.ckpt_dir} "
                   f"--resume {last} --epochs {cfg.epochs}")
    with stop_on_signals() as stop:
        try:
            while state.epoch < cfg.epochs and not state.stopped_early:
                started = time.time()
                stats = fit_epoch(run, state.epoch, batches_of, stop)
                if dist.is_main:
                    end_epoch(run, stats, started, log)
                stale = int(dist.is_main and cfg.patience > 0 and state.epoch - state.best_epoch >= cfg.patience)
                stale, signum = dist.agree([stale, stop.signum])
                if stale:
                    log(f"no better val macro AUC for {cfg.patience} epochs: stopping early")
                    state.stopped_early = True
                    if dist.is_main:
                        save_checkpoint(run.checkpoint(), last)
                if signum:
                    raise TrainingInterrupted(signum)
                if cfg.stop_after_epoch is not None and cfg.stop_after_epoch <= state.epoch < cfg.epochs \
                        and not state.stopped_early:
                    log(f"stopped after epoch {state.epoch} as asked; {resume_hint}")
                    dist.barrier()
                    return None
        except TrainingInterrupted:
            if dist.is_main:
                save_checkpoint(run.checkpoint(), last)
                log(f"\ninterrupted: saved {last} (epoch {state.epoch}, +{state.batches_done} batches); {resume_hint}")
            dist.barrier()
            raise
        except torch.OutOfMemoryError:
            raise out_of_memory(run, last) from None
    report = None
    if dist.is_main:
        report = final_report(run)
        log(format_summary(report))
    dist.barrier()
    return report


def final_report(run: Run) -> dict:
    """Score best.pt once: F1 thresholds tuned on validation, then test; write metrics.json and the curve PNGs."""

    cfg, data, state, ckpt_dir = run.cfg, run.data, run.state, Path(run.cfg.ckpt_dir)
    unwrap(run.model).load_state_dict(load_checkpoint(ckpt_dir / "best.pt")["model"])
    val_probs, test_probs = run.score("val"), run.score("test")
    thresholds = (tune_thresholds(val_probs, one_hot(data.y["val"], len(data.classes), True))
                  if data.multilabel else None)
    best_row = next(row for row in state.history if row["epoch"] == state.best_epoch)
    report = {
        "val": summarise(val_probs, data.y["val"], data.multilabel, data.classes, thresholds),
        "test": summarise(test_probs, data.y["test"], data.multilabel, data.classes, thresholds, intervals=True),
        "best_epoch": state.best_epoch, "epochs": state.epoch,
        "samples_backpropagated": state.samples_backpropagated,
        "samples_backpropagated_at_best": best_row["samples_backpropagated"],
        "effective_epochs": state.samples_backpropagated / data.full_train,
        "scoring_forward_samples": state.scoring_forward_samples,
        "pdd": {**asdict(run.plan), "match": cfg.pdd_match, "revision_frac": cfg.revision_frac},
        "wall_seconds": round(run.elapsed(), 1), "train_seconds": round(state.train_seconds, 1),
        "samples_per_second": round(state.samples_backpropagated / max(state.train_seconds, 1e-9), 1),
        "n_params": count_parameters(run.model), "model_hparams": run.hparams, "config": asdict(cfg),
        "classes": data.classes, "task": data.task, "multilabel": data.multilabel, "input_shape": data.input_shape,
        "data_dir": str(cfg.data_dir), "data_fingerprint": data.fingerprint.get("dataset"),
        "started_from": run.source, "ckpt_dir": str(cfg.ckpt_dir), "checkpoint": str(ckpt_dir / "best.pt"),
        "world_size": run.dist.world_size, "device": str(run.dist.device), "torch_version": str(torch.__version__),
    }
    write_json_atomic(ckpt_dir / "metrics.json", report)
    plot_history(ckpt_dir / "training_curves.png", state.history)
    plot_roc_curves(ckpt_dir / "roc_curves.png", test_probs, data.y["test"], data.multilabel, data.classes)
    return report


def main(cfg: TrainConfig, job: Callable[[TrainConfig], object] = train) -> int:
    """job(cfg) (train, or an ensemble's training) for the command line: known failures become one message and an
    exit code, no traceback."""
    try:
        job(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        print(f"{e}", file=sys.stderr)
        return 128 + e.signum
    return 0
