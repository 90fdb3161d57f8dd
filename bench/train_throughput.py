"""Samples/s of the pipeline's training loop, the share of a step its data path takes, and the usual
Dataset + DataLoader loop on the same records, model and device (bench/loops.py).

    python bench/train_throughput.py                                   # synthetic records, CPU
    python bench/train_throughput.py --data_dir results/baseline --placement ram --batches 40
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loops import dataloader_loop, our_loop  # noqa: E402
from common.augment import window_samples  # noqa: E402
from common.config import TrainConfig  # noqa: E402
from common.data import PLACEMENTS, TrainBatches, choose_placement  # noqa: E402
from common.run import amp_dtype_for  # noqa: E402
from common.traindata import load_data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", help="use this data dir's train split instead of synthetic records")
    p.add_argument("--records", type=int, default=4096, help="synthetic records")
    p.add_argument("--length", type=int, default=1000, help="synthetic record length (samples)")
    p.add_argument("--fs", type=float, default=100.0, help="synthetic sampling rate (Hz)")
    p.add_argument("--batches", type=int, default=25, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    p.add_argument("--loader_workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--placement", choices=PLACEMENTS, default="auto", help="where the train split lives")
    args = p.parse_args()

    cfg, device = TrainConfig(), torch.device(args.device)
    torch.set_flush_denormal(True)
    if args.data_dir:
        data = load_data(args.data_dir, cfg.window_seconds)
        X, y, norm, fs = data.X["train"], data.y["train"], data.norm, data.input_shape["fs"]
    else:
        rng = np.random.default_rng(cfg.seed)
        X = rng.standard_normal((args.records, 12, args.length), dtype=np.float32)
        y = (rng.random((args.records, 5)) < 0.3).astype(np.float32)
        norm, fs = {"mean": [0.0] * 12, "std": [1.0] * 12}, args.fs
    window, amp = window_samples(cfg.window_seconds, fs), amp_dtype_for(cfg.amp, device)
    if len(X) < (args.warmup + args.batches) * cfg.batch_size:
        sys.exit(f"--warmup + --batches need {(args.warmup + args.batches) * cfg.batch_size} records at batch size "
                 f"{cfg.batch_size}; there are {len(X)}")
    placement, why = choose_placement(X.nbytes, device, args.placement)
    print(f"{len(X)} records of shape {X.shape[1:]}, window {window}, batch {cfg.batch_size}, {device}, amp {amp}, "
          f"{torch.get_num_threads()} threads, train split in {placement} ({why}); {args.batches} timed batches "
          f"after {args.warmup}")
    batches_of = TrainBatches(X, y, norm, window, fs, cfg.augment, cfg.seed, 0, device, placement)
    data_path, ours = our_loop(batches_of, y.shape[1] if y.ndim == 2 else int(y.max()) + 1, y.ndim == 2, cfg,
                               device, amp, args.batches, args.warmup)
    plain = dataloader_loop(X, y, norm, window, cfg, device, amp, args.batches, args.warmup, args.loader_workers,
                            pin_memory=True)
    print(f"{'':32} {'samples/s':>10}")
    print(f"{'data path alone (get_batch)':32} {data_path.samples_per_second:10.0f}")
    print(f"{'training steps (common/step.py)':32} {ours.samples_per_second:10.0f}")
    print(f"{'Dataset+DataLoader training':32} {plain.samples_per_second:10.0f}"
          f"   ({args.loader_workers} workers)")
    print(f"data path share of a step: {ours.samples_per_second / data_path.samples_per_second:.1%}; "
          f"pipeline / DataLoader: {ours.samples_per_second / plain.samples_per_second:.2f}x")


if __name__ == "__main__":
    main()
