"""Train the residual 1D CNN baseline on a data dir (docs/PIPELINE.md); all logic lives in common/ (common/train.py
reads top to bottom; every option is declared, with its help, in common/config.py).

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
from functools import partial

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.config import HelpFormatter, TrainConfig, parse_config  # noqa: E402
from common.ensemble import train_ensemble  # noqa: E402
from common.train import train  # noqa: E402


def parse_command(argv: list[str] | None = None) -> tuple[TrainConfig, list[int] | None]:
    """Command-line flags -> TrainConfig and the --seeds of an ensemble (None: one run)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train an ensemble: one member per seed in CKPT_DIR/seed<k> (finished members are reused, an "
                        "interrupted one continued), then score the average of their probabilities into "
                        "CKPT_DIR/metrics.json (predict.py --ckpt CKPT_DIR uses it)")
    cfg, extra = parse_config(argv, p)
    return cfg, extra["seeds"]


if __name__ == "__main__":
    config, seeds = parse_command()
    sys.exit(run_cli(partial(train_ensemble, config, seeds) if seeds else partial(train, config)))
