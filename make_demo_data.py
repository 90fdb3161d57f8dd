"""Write a seeded synthetic demo dataset in PTB-XL layout (no download); see demo/dataset.py."""
import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before numpy, pandas and wfdb load: Ctrl-C at start-up ends without a traceback

from demo.dataset import generate_demo_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, generate the dataset and print its summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=Path("raw_data"),
                   help="dataset root to create, or a previous demo dataset to replace")
    p.add_argument("--n_records", type=int, default=300, help="number of ECG records")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    p.add_argument("--with_500hz", action="store_true", help="also write records500/ (5000 samples per record)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    summary = generate_demo_dataset(args.out_dir, args.n_records, args.seed, args.with_500hz)
    print(json.dumps(summary | {"seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return summary


if __name__ == "__main__":
    sys.exit(run_cli(partial(main, sys.argv[1:])))
