"""Score every training record's difficulty with a trained checkpoint (higher = harder); see README."""
import argparse
import logging
import sys
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.datadir import DEFAULT_DATA_DIR  # noqa: E402
from common.difficulty import SCORES, compute_difficulty  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--ckpt", type=Path, default=Path("baseline_ckpt/best.pt"), help="trained checkpoint")
    p.add_argument("--score", choices=SCORES, default="loss",
                   help="loss: mean BCE over classes (CE for single-label); el2n: ||p - y||_2 (Paul et al. 2021)")
    p.add_argument("--oof", type=int, default=0, metavar="K",
                   help="score out of fold: train K models like --ckpt's run, each without one patient-grouped "
                        "fold of train, and score that fold with it (K x the training cost; 0: off)")
    p.add_argument("--oof_dir", type=Path, default=None, help="where the out-of-fold runs go (default DATA_DIR_oof)")
    p.add_argument("--oof_epochs", type=int, default=None, help="epochs of each out-of-fold run (default: --ckpt's)")
    p.add_argument("--batch_size", type=int, default=512, help="windows per forward pass")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    scores = compute_difficulty(args.data_dir, args.ckpt, args.score, args.oof, args.oof_dir, args.oof_epochs,
                                args.batch_size, args.device)
    print(f"{len(scores)} training records scored ({args.score}): mean {scores.mean():.4f}, "
          f"min {scores.min():.4f}, max {scores.max():.4f}; wrote {args.data_dir}/difficulty.npy, .csv and .json")


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted="the out-of-fold runs start again when the command is repeated"))
