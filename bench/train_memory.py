"""Peak anonymous memory and samples/s of training with the train split in RAM and read from the memory map.

    python bench/train_memory.py --data_dir results/dev500 [--epochs 1] [train_1d_baseline.py options ...]

Runs train_1d_baseline.py once per placement (--placement ram, then mmap) into fresh run dirs under
--out_dir and samples RssAnon summed over its processes (bench/preprocess_memory.py's sampler): the
memory-mapped arrays' file pages do not count, a copy in RAM does. Prints each peak beside the train
array's size and the run's training samples/s.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.preprocess_memory import measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, required=True)
    p.add_argument("--out_dir", type=Path, default=Path("bench/out/train_memory"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    args, extra = p.parse_known_args()
    train_gb = (args.data_dir / "X_train.npy").stat().st_size / 1e9
    print(f"X_train.npy: {train_gb:.2f} GB")
    for placement in ("ram", "mmap"):
        run = args.out_dir / placement
        shutil.rmtree(run, ignore_errors=True)
        result = measure([sys.executable, str(ROOT / "train_1d_baseline.py"), "--data_dir", str(args.data_dir),
                          "--ckpt_dir", str(run), "--epochs", str(args.epochs), "--placement", placement,
                          "--device", "cpu", *extra], args.interval)
        if result["returncode"] != 0:
            print(f"--placement {placement}: training failed (exit {result['returncode']})", file=sys.stderr)
            return 1
        metrics = json.loads((run / "metrics.json").read_text())
        print(f"--placement {placement:4}: peak anonymous memory {result['total_mb']:,.0f} MB "
              f"(train array {train_gb * 1e3:,.0f} MB), {metrics['samples_per_second']:,.0f} training samples/s, "
              f"{result['seconds']:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
