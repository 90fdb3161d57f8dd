"""Build the PDD stage data dirs (stage1..3) from pdd_split.py's buckets (see README)."""
import argparse
import logging
import sys
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.datadir import DEFAULT_DATA_DIR, DEFAULT_PDD_DIR  # noqa: E402
from common.pdd_stages import STAGE_MODES, generate_stages  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="the data dir that was scored")
    p.add_argument("--split_dir", type=Path, default=DEFAULT_PDD_DIR, help="where pdd_split.py wrote its files")
    p.add_argument("--out_dir", type=Path, default=DEFAULT_PDD_DIR, help="stage1..3 are created here")
    p.add_argument("--mode", choices=STAGE_MODES, default="cumulative",
                   help="cumulative: easy, easy+medium, all; disjoint: easy, medium, hard")
    p.add_argument("--stage_epochs", type=int, nargs=3, default=[10, 10, 10], metavar=("E1", "E2", "E3"),
                   help="epochs per stage (>= 1); stored in each stage's meta.json as train_1d_baseline.py's "
                        "default --epochs")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stages = generate_stages(args.data_dir, args.split_dir, args.out_dir, args.mode, tuple(args.stage_epochs))
    print("train them in order, each resuming from the one before:")
    previous = None
    for k, stage in enumerate(stages, start=1):
        resume = f" --resume pdd_ckpt/stage{k - 1}/last.pt" if previous else ""
        print(f"  python train_1d_baseline.py --data_dir {stage} --ckpt_dir pdd_ckpt/stage{k}{resume}")
        previous = stage


if __name__ == "__main__":
    sys.exit(run_cli(main))
