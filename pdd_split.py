"""Split the training records into easy / medium / hard buckets by difficulty score (see README)."""
import argparse
import logging
import sys
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.datadir import DEFAULT_DATA_DIR, DEFAULT_PDD_DIR  # noqa: E402
from common.pdd import HISTOGRAM_PNG, SPLITS_JSON, format_table, split_difficulty  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=DEFAULT_DATA_DIR, help="data dir holding difficulty.npy")
    p.add_argument("--out_dir", type=Path, default=DEFAULT_PDD_DIR)
    p.add_argument("--fractions", type=float, nargs=3, default=[1, 1, 1], metavar=("EASY", "MEDIUM", "HARD"),
                   help="relative bucket sizes (score quantiles), finite and positive; default thirds")
    p.add_argument("--per_class", action="store_true",
                   help="take the quantiles within each record's (rarest) class so every bucket keeps every class")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = split_difficulty(args.data_dir, args.out_dir, tuple(args.fractions), args.per_class)
    classes = list(result["buckets"]["easy"]["class_balance"])
    print(format_table(result["buckets"], classes))
    print(f"thresholds {result['thresholds']}; wrote {args.out_dir}/{SPLITS_JSON}, "
          f"{{easy,medium,hard}}_idx.npy and {HISTOGRAM_PNG}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
