"""The training config: every option of a run declared once (TrainConfig: default, help, group, categories), its
checks, how a resumed run or a PDD stage dir fills the options left open, and the command-line parser generated
from it (train_1d_baseline.py and the experiment runners use parse_config).

Categories live in each field's metadata and are read with options(tag=value):
  inherited   on --resume, an option not given comes from the resumed run
  identity    False: how and where this process runs, not what it trains (a killed run with other values of these
              is still this command's run)
  compared    False: not checked when a runner reuses a finished run (where it ran, how it was continued, the data
              (compared by fingerprint), the matched dbpd run, the one-cycle length that follows --epochs)
  runner      "run": set per run by every runner; "variant": set per variant by experiments/pdd_experiment.py
  one_run     continues or starts one run, so not an option of an ensemble
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from common.data import PLACEMENTS
from common.errors import ConfigError
from common.evaluate import AGGREGATIONS, DEFAULT_AGGREGATION
from common.online_pdd import PDD_MODES, SCORE_SOURCES
from common.traindata import data_meta

AMP_MODES = ("auto", "on", "off", "bf16", "fp16")
DEFAULT_EPOCHS = 15  # chosen on validation over 30 (docs/recipe_search_dev100.md)
GROUPS = {"run": "data and run dir", "schedule": "schedule and optimiser", "input": "windows and augmentation",
          "model": "model", "hardware": "hardware", "resume": "continue or start from a checkpoint",
          "pdd": "online Progressive Data Dropout (common/online_pdd.py)"}


def option(default: Any, group: str, help: str, **tags: Any) -> Any:
    """A TrainConfig field: its default, its --help group and text, and its categories (see the module doc)."""
    return field(default=default, metadata={"group": group, "help": help, **tags})


@dataclass
class TrainConfig:
    """Everything a run is configured by; each field is the flag --<name> of train_1d_baseline.py."""
    data_dir: str = option("results/baseline", "run", "data dir written by preprocess.py", compared=False)
    ckpt_dir: str = option("baseline_ckpt", "run", "run dir: checkpoints, history.csv, metrics.json",
                           compared=False, runner="run")
    epochs: int | None = option(
        None, "schedule", "total epochs of the run (--resume continues to it); default 15, or a PDD stage dir's "
        "planned epoch (pdd_folder_generator.py --stage_epochs)")
    schedule_epochs: int | None = option(
        None, "schedule", "one-cycle schedule length in epochs (default: a PDD stage dir's plan, the resumed "
        "checkpoint's, else --epochs)", compared=False, runner="variant")
    batch_size: int = option(128, "schedule", "records per batch and process", inherited=True)
    lr: float = option(3e-3, "schedule", "peak learning rate of the one-cycle AdamW schedule", inherited=True)
    weight_decay: float = option(1e-2, "schedule", "AdamW weight decay", inherited=True)
    window_seconds: float = option(2.5, "input", "random training crop; evaluation slides it by half its length",
                                   inherited=True)
    aggregation: str = option(
        DEFAULT_AGGREGATION, "input", "how the sliding windows' outputs make a record's probabilities (validation, "
        "test, difficulty, predict.py): sigmoid/softmax of the mean logit, or the highest or mean window probability",
        choices=AGGREGATIONS, inherited=True)
    augment: bool = option(False, "input", "random amplitude scaling, noise and baseline wander", inherited=True)
    patience: int = option(0, "schedule", "stop after this many epochs without a better val macro AUC (0: never)",
                           inherited=True)
    width: int = option(32, "model", "model channels of the first stage (doubled per stage)")
    stages: int = option(3, "model", "model stages (each later one halves the length)")
    blocks: int = option(1, "model", "residual blocks per stage")
    kernel_size: int = option(7, "model", "odd width of the residual convolutions")
    dropout: float = option(0.0, "model", "dropout before the linear head (may change on --resume)", inherited=True)
    seed: int = option(0, "schedule", "seed of the initial weights, batch order, crops and augmentation",
                       inherited=True, runner="run")
    device: str = option("auto", "hardware", "auto: CUDA when torch sees it, else CPU",
                         choices=("auto", "cpu", "cuda"), identity=False, compared=False)
    amp: str = option(
        "auto", "hardware", "mixed precision of training steps (auto: on for CUDA; on: bf16 where supported, else "
        "fp16 + GradScaler; bf16/fp16 force one); validation, test and scoring always run in fp32",
        choices=AMP_MODES, inherited=True)
    workers: int = option(0, "hardware", "background threads preparing batches (worth it for --placement mmap)",
                          identity=False, compared=False)
    placement: str = option(
        "auto", "hardware", "where the train split lives while training: auto (GPU memory when it fits, else RAM, "
        "else the memory map), device, ram or mmap", choices=PLACEMENTS, identity=False)
    cuda_graphs: str = option(
        "auto", "hardware", "auto: on one GPU, replay each full batch's training step as a captured CUDA graph (not "
        "with fp16, --pdd dbpd or --pdd infobatch); off: plain eager steps", choices=("auto", "off"), identity=False)
    threads: int = option(0, "hardware", "torch CPU threads (0: cores / processes)", identity=False, compared=False)
    resume: str | None = option(
        None, "resume", "last.pt to continue (weights, optimizer, epoch, counters); its data dir may differ (same "
        "classes and shape); options not given here are the resumed run's own, and the model (--width --stages "
        "--blocks --kernel_size) always is", identity=False, compared=False, runner="run", one_run=True)
    init_from: str | None = option(
        None, "resume", "checkpoint whose weights (and so its model: --width --stages --blocks --kernel_size) start "
        "a new run", identity=False, compared=False, runner="run", one_run=True)
    stop_after_epoch: int | None = option(
        None, "resume", "end this job after that epoch, resumable with --resume: splits a run across jobs",
        identity=False, compared=False, runner="run", one_run=True)
    pdd: str = option(
        "none", "pdd", "online Progressive Data Dropout: dbpd back-propagates only the records the model still finds "
        "hard, srd a random gamma^epoch fraction, smrd as many random records as a dbpd run kept, infobatch leaves "
        "out a random --pdd_ratio of the below-mean-loss records and up-weights the rest; all end with epochs on all "
        "records", choices=PDD_MODES, inherited=True, runner="variant")
    pdd_threshold: float = option(
        0.7, "pdd", "dbpd: a record is hard while its true-label probability is below this; multi-label: the lowest "
        "over classes of p (positive class) or 1-p (negative class), so a record is learnt only when every class is "
        "right with at least this probability", inherited=True)
    pdd_scores: str = option(
        "fresh", "pdd", "dbpd: fresh scores each batch by an extra forward pass (the paper); last uses each "
        "record's score from its last training forward pass (no extra pass)", choices=SCORE_SOURCES, inherited=True)
    pdd_readmit: float = option(
        0.1, "pdd", "dbpd --pdd_scores last: fraction of the learnt records trained anyway each epoch, so a record "
        "whose score went stale can come back", inherited=True)
    pdd_bn: str = option("restore", "pdd", "dbpd fresh: BatchNorm running stats after the scoring pass: restore, "
                         "or update (the paper's code)", choices=("restore", "update"), inherited=True)
    pdd_ratio: float = option(0.5, "pdd", "infobatch: fraction of the records with below-mean last loss left out "
                              "each epoch", inherited=True)
    pdd_delta: float = option(0.875, "pdd", "infobatch: the epochs after this fraction of the run train on all "
                              "records", inherited=True)
    pdd_gamma: float = option(0.9, "pdd", "srd: epoch e (from 0) takes ceil(gamma^e * N) random records",
                              inherited=True)
    pdd_match: str | None = option(
        None, "pdd", "smrd: run dir of a finished --pdd dbpd run on this data; its per-epoch counts are kept",
        inherited=True, compared=False, runner="variant")
    revision_frac: float = option(
        0.2, "pdd", "dbpd/srd/smrd: the last round(frac * epochs) epochs train on all records (infobatch: "
        "--pdd_delta)", inherited=True)
    overwrite: bool = option(False, "run", "replace the run in --ckpt_dir (refused otherwise, unless resuming that "
                             "run's last.pt)", identity=False, compared=False)
    # the options set on the command line (on --resume every other inherited option comes from the resumed run);
    # None (API use): all are given
    given: tuple[str, ...] | None = field(default=None, metadata={"flag": False, "identity": False, "compared": False})


def options(**tag: Any) -> tuple[str, ...]:
    """Names of the TrainConfig fields whose metadata has every tag=value given (a missing "flag", "identity" or
    "compared" counts as True, any other missing tag as None)."""
    def value(f: Field, key: str) -> Any:
        return f.metadata.get(key, True if key in ("flag", "identity", "compared") else None)
    return tuple(f.name for f in fields(TrainConfig) if all(value(f, k) == v for k, v in tag.items()))


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


def resolve_config(cfg: TrainConfig, ckpt: dict | None) -> TrainConfig:
    """Fill what the command line left open. On --resume, options not given come from the resumed run, so it
    continues as it was; from --resume or --init_from, the model is the checkpoint's (checkpoint_architecture).
    --epochs: given, else a PDD stage dir's plan (meta.json "pdd", written by pdd_folder_generator.py), else the
    resumed run's, else DEFAULT_EPOCHS. The one-cycle length: --schedule_epochs, else the
    stage plan's, else the resumed run's, else --epochs; a schedule shorter than the epochs is refused."""
    resumed = ckpt if cfg.resume and ckpt is not None else None
    if resumed is not None and cfg.given is not None:
        before = resumed["config"]
        cfg = replace(cfg, **{name: before[name] for name in options(inherited=True)
                              if name not in cfg.given and name in before})
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


def fresh_run(cfg: TrainConfig) -> TrainConfig:
    """The settings a new run of this command would train with (resolve_config, no checkpoint): what a finished or
    interrupted run found in its --ckpt_dir is compared with, to reuse or continue it, or to refuse it."""
    return resolve_config(replace(cfg, resume=None, init_from=None), None)


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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help: the script's docstring as written, every option with its default."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One --<name> per TrainConfig field, in GROUPS, with the field's type, choices, default and help."""
    groups = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        kind = f.type.split(" |")[0]
        if kind == "bool":
            groups[meta["group"]].add_argument(f"--{f.name}", action="store_true", help=meta["help"])
        else:
            groups[meta["group"]].add_argument(f"--{f.name}", type={"int": int, "float": float}.get(kind),
                                               choices=meta.get("choices"), default=f.default, help=meta["help"])


def parse_config(argv: list[str] | None = None,
                 parser: argparse.ArgumentParser | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """Command line -> TrainConfig (its `given`: the options on the command line) and the values of the parser's
    own other arguments (e.g. train_1d_baseline.py's --seeds)."""
    parser = parser or argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_config_arguments(parser)
    unset = object()  # argparse keeps attributes already on the namespace: those still unset were not given
    names = options(flag=True)
    args = vars(parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(names, unset))))
    config = {name: args.pop(name) for name in names}
    defaults = TrainConfig()
    return TrainConfig(**{name: getattr(defaults, name) if value is unset else value for name, value in config.items()},
                       given=tuple(sorted(name for name, value in config.items() if value is not unset))), args

