"""Time preprocess.py against a plain loop of wfdb.rdsamp over the same PTB-XL records; print the ratio.

    python bench/preprocess_speed.py --input_dir DEV_PACK [--limit N] [--workers W]

DEV_PACK is the restored dev pack (python3 ../shared/data/ptbxl100-dev/restore.py DEV_PACK).
The plain loop only reads the signals into one array; preprocess.py also labels, splits, writes the
.npy files, computes normalisation statistics and fingerprints, so the ratio understates its lead.
Every record file is read once before timing, so neither side pays for a cold disk cache.
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.preprocess import PreprocessConfig, preprocess  # noqa: E402


def warm_cache(input_dir: Path, records: list[str]) -> None:
    """Read every record's files once so both timings start from the same (warm) page cache."""
    for rec in records:
        for ext in (".hea", ".dat"):
            (input_dir / f"{rec}{ext}").read_bytes()


def plain_loop(input_dir: Path, records: list[str]) -> float:
    """Seconds for the obvious baseline: wfdb.rdsamp per record into a preallocated float32 array."""
    start = time.perf_counter()
    X = np.empty((len(records), 12, 1000), dtype=np.float32)
    for i, rec in enumerate(records):
        signal, _ = wfdb.rdsamp(str(input_dir / rec))
        X[i] = signal.T
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", type=Path, required=True, help="restored PTB-XL dev pack (100 Hz)")
    p.add_argument("--limit", type=int, default=None, help="only the first N records")
    p.add_argument("--workers", type=int, default=PreprocessConfig(input_dir=Path(".")).workers)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        csv = args.input_dir / "ptbxl_database.csv"
        table = pd.read_csv(csv)
        if args.limit:
            table = table.head(args.limit)
            csv = Path(tmp) / "ptbxl_database.csv"
            table.to_csv(csv, index=False)
            (Path(tmp) / "scp_statements.csv").write_bytes((args.input_dir / "scp_statements.csv").read_bytes())
        warm_cache(args.input_dir, table["filename_lr"].tolist())
        cfg = PreprocessConfig(input_dir=args.input_dir, meta_csv=csv, out_dir=Path(tmp) / "out",
                               val_folds=[8], test_folds=[9], workers=args.workers)
        start = time.perf_counter()
        meta = preprocess(cfg, command="bench")
        ours = time.perf_counter() - start
        plain = plain_loop(args.input_dir, table["filename_lr"].tolist())

    print(f"records:                     {len(table)} ({sum(meta['counts'].values())} kept after labels)")
    print(f"plain wfdb.rdsamp loop:      {plain:8.2f} s  ({len(table) / plain:7.0f} records/s)")
    print(f"preprocess.py ({args.workers} workers):   {ours:8.2f} s  ({len(table) / ours:7.0f} records/s)")
    print(f"speed-up:                    {plain / ours:8.1f}x")


if __name__ == "__main__":
    main()
