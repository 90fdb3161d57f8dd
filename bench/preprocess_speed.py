"""Time preprocess.py against a plain loop of wfdb.rdsamp over the same PTB-XL records, and preprocess.py's
reader workers started by fork (Linux's default) against spawn (macOS's and Windows'); print the ratios.

    python bench/preprocess_speed.py --input_dir DEV_PACK [--limit N] [--workers W] [--repeats R] [--bandpass off]

DEV_PACK is the restored dev pack (python3 ../shared/data/ptbxl100-dev/restore.py DEV_PACK).
The plain loop only reads the signals into one array; preprocess.py also labels, splits, writes the
.npy files, computes normalisation statistics and fingerprints, so the ratio understates its lead.
Every record file is read once before timing, so neither side pays for a cold disk cache. With --repeats R each
start method runs R times, alternating, and the fastest run of each is compared.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # not in the spawned workers, which import this file again (as preprocess.py's do)
    import numpy as np
    import pandas as pd
    import wfdb

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from common.preprocess import PreprocessConfig, preprocess


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


def timed_preprocess(cfg: PreprocessConfig, start_method: str) -> tuple[float, dict]:
    """Seconds and meta.json of one preprocess run whose reader workers start by start_method."""
    multiprocessing.set_start_method(start_method, force=True)
    start = time.perf_counter()
    meta = preprocess(cfg, command="bench")
    return time.perf_counter() - start, meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dir", type=Path, required=True, help="restored PTB-XL dev pack (100 Hz)")
    p.add_argument("--limit", type=int, default=None, help="only the first N records")
    p.add_argument("--workers", type=int, default=PreprocessConfig(input_dir=Path(".")).workers)
    p.add_argument("--repeats", type=int, default=1, help="runs per start method (the fastest counts)")
    p.add_argument("--bandpass", choices=["auto", "off"], default="auto",
                   help="preprocess.py's --bandpass (off: the reading alone, without the filtering)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    methods = [m for m in ("fork", "spawn") if m in multiprocessing.get_all_start_methods()]

    with tempfile.TemporaryDirectory() as tmp:
        csv = args.input_dir / "ptbxl_database.csv"
        table = pd.read_csv(csv)
        if args.limit:
            table = table.head(args.limit)
            csv = Path(tmp) / "ptbxl_database.csv"
            table.to_csv(csv, index=False)
            (Path(tmp) / "scp_statements.csv").write_bytes((args.input_dir / "scp_statements.csv").read_bytes())
        warm_cache(args.input_dir, table["filename_lr"].tolist())
        seconds = {method: [] for method in methods}
        for run in range(args.repeats):
            for method in methods if run % 2 == 0 else methods[::-1]:
                out_dir = Path(tmp) / f"{method}{run}"
                cfg = PreprocessConfig(input_dir=args.input_dir, meta_csv=csv, out_dir=out_dir, val_folds=[8],
                                       test_folds=[9], workers=args.workers, bandpass=args.bandpass)
                took, meta = timed_preprocess(cfg, method)
                seconds[method].append(took)
        plain = plain_loop(args.input_dir, table["filename_lr"].tolist())

    best = {method: min(runs) for method, runs in seconds.items()}
    ours = min(best.values())
    print(f"records:                     {len(table)} ({sum(meta['counts'].values())} kept after labels; "
          f"--bandpass {args.bandpass})")
    print(f"plain wfdb.rdsamp loop:      {plain:8.2f} s  ({len(table) / plain:7.0f} records/s)")
    for method, took in best.items():
        runs = ", ".join(f"{t:.2f}" for t in seconds[method])
        print(f"preprocess.py, {args.workers} workers, {method:5s}: {took:8.2f} s  ({len(table) / took:7.0f} "
              f"records/s; runs {runs} s)")
    print(f"speed-up over the plain loop: {plain / ours:7.1f}x")
    if len(best) == 2:
        ratio = best["spawn"] / best["fork"]
        print(f"spawn / fork:                {ratio:8.3f} ({'within' if abs(ratio - 1) <= 0.10 else 'NOT within'} 10 %)")


if __name__ == "__main__":
    main()
