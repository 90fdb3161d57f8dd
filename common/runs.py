"""Runs that a runner trains for the user (ensemble members, experiment runs): a finished run with the wanted
settings is reused, an interrupted one resumed, one made with other settings or data refused, naming the difference."""
from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import psutil

from common.checkpoint import load_checkpoint
from common.config import TrainConfig, fresh_run, options
from common.datadir import load_meta, write_json_atomic
from common.errors import ConfigError
from common.evaluate import legacy_aggregation
from common.files import load_json
from common.train import train

COMPARED = options(compared=True)  # what a run was trained with (common/config.py)
LOAD_NAME = "load.json"


def stored_run(run_dir: Path) -> tuple[dict, str | None, Path] | None:
    """(config, data fingerprint, file read) of the finished or interrupted run in run_dir; None when there is none."""
    if (run_dir / "metrics.json").is_file():
        metrics = load_json(run_dir / "metrics.json", f"remove {run_dir} and run again",
                            ("config", "data_fingerprint", "multilabel"))
        config = {"aggregation": legacy_aggregation(bool(metrics["multilabel"])), **metrics["config"]}
        return config, metrics["data_fingerprint"], run_dir / "metrics.json"
    if (run_dir / "last.pt").is_file():
        ckpt = load_checkpoint(run_dir / "last.pt")
        return ckpt["config"], (ckpt.get("data_fingerprint") or {}).get("dataset"), run_dir / "last.pt"
    return None


def run_load(run_dir: Path) -> float | None:
    """The 5-minute load average when the run ended (load.json), None when no runner recorded it."""
    path = run_dir / LOAD_NAME
    return load_json(path, f"remove {path}")["load_5min_at_end"] if path.is_file() else None


def check_reusable(cfg: TrainConfig, asked_by: str = "this experiment", out_flag: str = "--out_dir") -> None:
    """Refuse a run dir whose run was trained with other settings (COMPARED) or on other data than cfg asks for,
    naming each difference and the fix (another `out_flag`); data dirs are compared by their arrays' fingerprint,
    not their path."""
    run_dir = Path(cfg.ckpt_dir)
    stored = stored_run(run_dir)
    if stored is None:
        return
    config, fingerprint, source = stored
    wanted = asdict(fresh_run(cfg))
    differ = [name for name in COMPARED if config.get(name) != wanted[name]]
    theirs = [f"--{name} {config.get(name)}" for name in differ]
    ours = [f"--{name} {wanted[name]}" for name in differ]
    if fingerprint != load_meta(cfg.data_dir)["fingerprint"]["dataset"]:
        theirs.append("other data")
        ours.append(f"the data {cfg.data_dir} holds now")
    if theirs:
        raise ConfigError(f"{run_dir} was trained with {' '.join(theirs)} ({source.name}), {asked_by} asks for "
                          f"{' '.join(ours)}; use another {out_flag} or remove {run_dir}")


def trained(cfg: TrainConfig, asked_by: str = "this experiment", out_flag: str = "--out_dir") -> dict:
    """metrics.json of cfg's run: read when it finished with cfg's settings, else trained, resuming its own last.pt
    if present; a run made with other settings is refused. A run trained here gets load.json beside it: the
    5-minute load average when it ended, so a timing taken while something else ran shows."""
    run_dir = Path(cfg.ckpt_dir)
    check_reusable(cfg, asked_by, out_flag)
    if (run_dir / "metrics.json").is_file():
        print(f"{run_dir}: finished earlier with these settings, reusing its metrics.json", flush=True)
        return load_json(run_dir / "metrics.json", f"remove {run_dir} and run again")
    if (run_dir / "last.pt").is_file():
        cfg = replace(cfg, resume=str(run_dir / "last.pt"))
    print(f"\n=== {run_dir}" + (f" (resuming {cfg.resume})" if cfg.resume else ""), flush=True)
    metrics = train(cfg)
    if metrics is not None:
        write_json_atomic(run_dir / LOAD_NAME, {"load_5min_at_end": psutil.getloadavg()[1], "cpus": os.cpu_count()})
    return metrics

