"""Train the residual 1D CNN baseline on a data dir (docs/PIPELINE.md); all logic lives in common/train.py.

    python train_1d_baseline.py --data_dir results/baseline --ckpt_dir baseline_ckpt
    python train_1d_baseline.py --data_dir results/pdd/stage2 --ckpt_dir pdd_ckpt/stage2 \\
        --resume pdd_ckpt/stage1/last.pt      # epochs: the stage's plan from pdd_folder_generator.py
    python train_1d_baseline.py --data_dir results/baseline --ckpt_dir dbpd_ckpt --pdd dbpd   # online PDD
    python train_1d_baseline.py --data_dir results/baseline --ckpt_dir ensemble --seeds 0 1 2   # an ensemble
    torchrun --nproc_per_node=2 train_1d_baseline.py ...      # DistributedDataParallel, same flags
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from functools import partial

from common.cli import quiet_interrupts

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.data import PLACEMENTS  # noqa: E402
from common.ensemble import train_ensemble  # noqa: E402
from common.evaluate import AGGREGATIONS  # noqa: E402
from common.online_pdd import PDD_MODES, SCORE_SOURCES  # noqa: E402
from common.train import AMP_MODES, TrainConfig, main, train  # noqa: E402


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command-line flags -> TrainConfig (without --seeds); every default comes from TrainConfig."""
    return parse_command(argv)[0]


def parse_command(argv: list[str] | None = None) -> tuple[TrainConfig, list[int] | None]:
    """Command-line flags -> TrainConfig and the --seeds of an ensemble (None: one run)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=d.data_dir, help="data dir written by preprocess.py")
    p.add_argument("--ckpt_dir", default=d.ckpt_dir, help="run dir: checkpoints, history.csv, metrics.json")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="total epochs of the run (--resume continues to it); default 15, or a PDD stage dir's "
                        "planned epoch (pdd_folder_generator.py --stage_epochs)")
    p.add_argument("--schedule_epochs", type=int, default=d.schedule_epochs,
                   help="one-cycle schedule length in epochs (default: a PDD stage dir's plan, the resumed "
                        "checkpoint's, else --epochs)")
    p.add_argument("--batch_size", type=int, default=d.batch_size, help="records per batch and process")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle AdamW schedule")
    p.add_argument("--weight_decay", type=float, default=d.weight_decay)
    p.add_argument("--window_seconds", type=float, default=d.window_seconds,
                   help="random training crop; evaluation slides it by half its length")
    p.add_argument("--aggregation", choices=AGGREGATIONS, default=d.aggregation,
                   help="how the sliding windows' outputs make a record's probabilities (validation, test, difficulty, "
                        "predict.py): sigmoid/softmax of the mean logit, or the highest or mean window probability")
    p.add_argument("--augment", action="store_true", help="random amplitude scaling, noise and baseline wander")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop after this many epochs without a better val macro AUC (0: never)")
    p.add_argument("--width", type=int, default=d.width, help="model channels of the first stage (doubled per stage)")
    p.add_argument("--stages", type=int, default=d.stages, help="model stages")
    p.add_argument("--blocks", type=int, default=d.blocks, help="residual blocks per stage")
    p.add_argument("--kernel_size", type=int, default=d.kernel_size, help="odd width of the residual convolutions")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout before the linear head")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train an ensemble: one member per seed in CKPT_DIR/seed<k> (finished members are reused, an "
                        "interrupted one continued), then score the average of their probabilities into "
                        "CKPT_DIR/metrics.json (predict.py --ckpt CKPT_DIR uses it)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    p.add_argument("--amp", choices=AMP_MODES, default=d.amp,
                   help="mixed precision of training steps (auto: on for CUDA; on: bf16 where supported, else fp16 + "
                        "GradScaler; bf16/fp16 force one); validation, test and scoring always run in fp32")
    p.add_argument("--cuda_graphs", choices=("auto", "off"), default=d.cuda_graphs,
                   help="auto: on one GPU, replay each full batch's training step as a captured CUDA graph "
                        "(not with fp16, --pdd dbpd or --pdd infobatch); off: plain eager steps")
    p.add_argument("--placement", choices=PLACEMENTS, default=d.placement,
                   help="where the train split lives while training: auto (GPU memory when it fits, else RAM, else "
                        "the memory map), device, ram or mmap")
    p.add_argument("--workers", type=int, default=d.workers, help="background threads preparing batches")
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: cores / processes)")
    p.add_argument("--resume", default=d.resume,
                   help="last.pt to continue (weights, optimizer, epoch, counters); options not given here are the "
                        "resumed run's own, and the model (--width --stages --blocks --kernel_size) always is")
    p.add_argument("--init_from", default=d.init_from,
                   help="checkpoint whose weights (and so its model: --width --stages --blocks --kernel_size) start a "
                        "new run")
    p.add_argument("--stop_after_epoch", type=int, default=d.stop_after_epoch,
                   help="end this job after that epoch, resumable with --resume: splits a run across jobs")
    p.add_argument("--pdd", choices=PDD_MODES, default=d.pdd,
                   help="online Progressive Data Dropout: dbpd back-propagates only the records the model still "
                        "finds hard, srd a random gamma^epoch fraction, smrd as many random records as a dbpd run "
                        "kept, infobatch leaves out a random --pdd_ratio of the below-mean-loss records and "
                        "up-weights the rest; all end with epochs on all records (common/online_pdd.py)")
    p.add_argument("--pdd_threshold", type=float, default=d.pdd_threshold,
                   help="dbpd: a record is hard while its true-label probability is below this; multi-label: the "
                        "lowest over classes of p (positive class) or 1-p (negative class), so a record is learnt "
                        "only when every class is right with at least this probability")
    p.add_argument("--pdd_scores", choices=SCORE_SOURCES, default=d.pdd_scores,
                   help="dbpd: fresh scores each batch by an extra forward pass (the paper); last uses each record's "
                        "score from its last training forward pass (no extra pass)")
    p.add_argument("--pdd_readmit", type=float, default=d.pdd_readmit,
                   help="dbpd --pdd_scores last: fraction of the learnt records trained anyway each epoch, so a "
                        "record whose score went stale can come back")
    p.add_argument("--pdd_bn", choices=("restore", "update"), default=d.pdd_bn,
                   help="dbpd fresh: BatchNorm running stats after the scoring pass: restore, or update (the "
                        "paper's code)")
    p.add_argument("--pdd_ratio", type=float, default=d.pdd_ratio,
                   help="infobatch: fraction of the records with below-mean last loss left out each epoch")
    p.add_argument("--pdd_delta", type=float, default=d.pdd_delta,
                   help="infobatch: the epochs after this fraction of the run train on all records")
    p.add_argument("--pdd_gamma", type=float, default=d.pdd_gamma,
                   help="srd: epoch e (from 0) takes ceil(gamma^e * N) random records")
    p.add_argument("--pdd_match", default=d.pdd_match,
                   help="smrd: run dir of a finished --pdd dbpd run on this data; its per-epoch counts are kept")
    p.add_argument("--revision_frac", type=float, default=d.revision_frac,
                   help="dbpd/srd/smrd: the last round(frac * epochs) epochs train on all records (infobatch: "
                        "--pdd_delta)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --ckpt_dir (refused otherwise, unless resuming that run's last.pt)")
    unset = object()  # argparse keeps attributes already on the namespace: those still unset were not given
    names = [f.name for f in fields(TrainConfig) if f.name != "given"]
    args = vars(p.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(names, unset))))
    seeds = args.pop("seeds")
    given = sorted(name for name, value in args.items() if value is not unset)
    return TrainConfig(**{name: getattr(d, name) if value is unset else value for name, value in args.items()},
                       given=tuple(given)), seeds


if __name__ == "__main__":
    config, ensemble_seeds = parse_command()
    sys.exit(main(config, partial(train_ensemble, seeds=ensemble_seeds) if ensemble_seeds else train))
