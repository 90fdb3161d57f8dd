"""Split the training records into easy / medium / hard buckets by difficulty score (see README)."""
import argparse
import logging
import sys
from pathlib import Path

from common.pdd import format_table, split_difficulty


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data_dir", type=Path, default=Path("results/baseline"), help="data dir holding difficulty.npy")
    p.add_argument("--out_dir", type=Path, default=Path("results/pdd"))
    p.add_argument("--fractions", type=float, nargs=3, default=[1, 1, 1], metavar=("EASY", "MEDIUM", "HARD"),
                   help="relative bucket sizes (score quantiles); default thirds")
    p.add_argument("--per_class", action="store_true",
                   help="take the quantiles within each record's (rarest) class so every bucket keeps every class")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = split_difficulty(args.data_dir, args.out_dir, tuple(args.fractions), args.per_class)
    except (OSError, ValueError) as exc:
        logging.error("error: %s", exc)
        return 1
    classes = list(result["buckets"]["easy"]["class_balance"])
    print(format_table(result["buckets"], classes))
    print(f"thresholds {result['thresholds']}; wrote {args.out_dir}/splits.json, "
          "{easy,medium,hard}_idx.npy and difficulty_hist.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
