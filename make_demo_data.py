"""Write a seeded synthetic demo dataset in PTB-XL layout (no download); see demo/dataset.py."""
import argparse
import json
import sys
import time
from pathlib import Path

from demo.dataset import generate_demo_dataset


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, generate the dataset and print its summary."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=Path("raw_data"), help="dataset root to create or replace")
    p.add_argument("--n_records", type=int, default=300, help="number of ECG records")
    p.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    p.add_argument("--with_500hz", action="store_true", help="also write records500/ (5000 samples per record)")
    p.add_argument("--overwrite", action="store_true", help="replace --out_dir even if it holds other data")
    args = p.parse_args(argv)
    start = time.perf_counter()
    try:
        summary = generate_demo_dataset(args.out_dir, args.n_records, args.seed, args.with_500hz, args.overwrite)
    except ValueError as error:
        p.exit(2, f"error: {error}\n")
    print(json.dumps(summary | {"seconds": round(time.perf_counter() - start, 1)}, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
