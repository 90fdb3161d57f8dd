"""The run dir (--ckpt_dir) a run owns: claimed under a lock for the run's lifetime, another run in it refused,
this command's killed run continued, and a GPU out of memory turned into a resumable stop."""
from __future__ import annotations

import contextlib
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator

import torch

from common.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from common.config import TrainConfig, fresh_run, options
from common.datadir import remove_stale_temp_files
from common.distributed import Dist
from common.errors import ConfigError
from common.locks import FileLock, try_lock
from common.outputs import check_writable, new_folders
from common.run import Run
from common.traindata import Data

RUN_FILES = ("last.pt", "best.pt", "history.csv", "metrics.json", "predictions.npz", "training_curves.png",
             "roc_curves.png")


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
    busy.release()
    try:
        ckpt = load_checkpoint(last)
    except CheckpointError:
        return cfg
    not_the_run = options(identity=False)
    wanted = asdict(fresh_run(cfg))
    if any(ckpt["config"].get(name) != value for name, value in wanted.items() if name not in not_the_run):
        return cfg
    print(f"{cfg.ckpt_dir} holds this command's interrupted run (epoch {ckpt['state']['epoch']}): continuing it "
          "(pass --overwrite to start afresh)", flush=True)
    return replace(cfg, resume=str(last), init_from=None, given=None)


def ensemble_members(ckpt_dir: Path) -> list[str]:
    """The member folders (seed<k>/, common.ensemble.member_dir) that make ckpt_dir an ensemble dir, sorted."""
    return sorted(p.name for p in ckpt_dir.glob("seed*") if p.name[4:].isdigit() and p.is_dir())


def claim_run_dir(cfg: TrainConfig) -> FileLock:
    """Lock the existing ckpt_dir for this run's lifetime (common/locks.py: the lock goes with the process, even on
    kill -9); refuse an ensemble dir, and a dir holding another run unless --overwrite (its files are then removed)
    or resuming its own last.pt. Returns the lock."""
    ckpt_dir = Path(cfg.ckpt_dir)
    lock = try_lock(ckpt_dir)
    if lock is None:
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
        lock.release()
        raise
    return lock


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
                held.callback(claim_run_dir(cfg).release)
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
