"""Train the residual 1D CNN on a data dir (docs/PIPELINE.md), read top to bottom: config, data, model and
optimiser, the epoch loop, the report. Each step lives in the module named for its job:

  config     common/config.py     TrainConfig, its checks, the options a resumed run or a PDD stage dir fills
  run dir    common/rundir.py     continue this command's killed run; claim ckpt_dir under a lock
  data       common/traindata.py  load and check the data dir
  model      common/run.py        build the model and optimiser, or restore them from --resume / --init_from
  loop       common/loop.py       per epoch: rows, batches (common/step.py), validation, last.pt / best.pt
  report     common/report.py     score best.pt on validation and test -> metrics.json and the curves
Runs unchanged under torchrun (DistributedDataParallel; rank 0 evaluates and writes every file).
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.distributed as torch_dist

from common.checkpoint import check_compatible, load_checkpoint
from common.config import TrainConfig, check_config, resolve_config
from common.data import TrainBatches, choose_placement
from common.distributed import Dist, init_distributed
from common.host import usable_cpus
from common.loop import run_epochs
from common.metrics import format_summary
from common.model import count_parameters
from common.report import final_report
from common.run import Run, start_run
from common.rundir import check_same_pdd_split, continue_if_interrupted, run_dir_claimed
from common.traindata import Data, load_data


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
        torch.set_num_threads(cfg.threads or max(1, usable_cpus() // dist.processes_per_node))
        torch.set_flush_denormal(True)  # denormal floats made some CPU batches 10-20x slower
        data = load_data(cfg.data_dir, cfg.window_seconds)
        if ckpt is not None:
            check_compatible(ckpt, source, data.classes, data.input_shape,
                             "use a checkpoint trained on data with the same classes and input shape, or start a new "
                             "run without --resume/--init_from")
        if cfg.resume:
            check_same_pdd_split(ckpt, cfg.resume, data, cfg.data_dir)
        with run_dir_claimed(cfg, dist):
            return train_and_report(cfg, ckpt, data, dist)
    finally:
        if dist.world_size > 1:
            torch_dist.destroy_process_group()


def train_and_report(cfg: TrainConfig, ckpt: dict | None, data: Data, dist: Dist) -> dict | None:
    """Model and optimiser, the epoch loop, then the final report; the run dir is claimed."""
    log = partial(print, flush=True) if dist.is_main else (lambda *args, **kwargs: None)
    run = start_run(cfg, ckpt, data, dist, log)
    log_start(run, log)
    placement, why = choose_placement(data.X["train"].nbytes, dist.device, cfg.placement, dist.processes_per_node)
    log(f"train split in {placement}: {why}")
    batches_of = TrainBatches(data.X["train"], data.y["train"], data.norm, data.input_shape["window"],
                              data.input_shape["fs"], cfg.augment, cfg.seed, dist.rank, dist.device, placement)
    if not run_epochs(run, batches_of, log):
        return None
    report = None
    if dist.is_main:
        report = final_report(run)
        log(format_summary(report))
    dist.barrier()
    return report


def log_start(run: Run, log: Callable[..., None]) -> None:
    """Print what is trained on what: the data, the model, the hardware and the schedule."""
    cfg, data, dist, state = run.cfg, run.data, run.dist, run.state
    log(f"data {cfg.data_dir}: {len(data.X['train'])} train / {len(data.X['val'])} val / {len(data.X['test'])} test"
        f" records, {'multi' if data.multilabel else 'single'}-label {data.classes}, {data.input_shape}")
    log(f"model {count_parameters(run.step.model):,} params {run.hparams}; {dist.device} x{dist.world_size}, "
        f"{torch.get_num_threads()} threads, amp {run.step.amp_dtype}, "
        f"cuda graphs {'on' if run.step.graphed else 'off'}; epochs {state.epoch + 1}..{cfg.epochs} of a "
        f"{cfg.schedule_epochs}-epoch one-cycle, batch {cfg.batch_size}, lr {cfg.lr:g}, augment {cfg.augment}"
        + (f", from {run.source}" if run.source else ""))
