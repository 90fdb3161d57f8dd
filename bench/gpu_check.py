"""One command for a CUDA machine: the CUDA tests, a 30-epoch default-model baseline (30 epochs, as in the figures
measured before the default became 15) with its wall time, samples/s, epoch time and GPU busy fraction, the
pipeline's loop against a plain Dataset/DataLoader loop (4 workers, pinned memory), and one 500 Hz epoch. Without
CUDA it says so and exits 0.

    python bench/gpu_check.py --data_dir results/dev100 --out bench/out/gpu
    python bench/gpu_check.py --data_dir results/dev100 --train_rows 14955   # tile train rows to this count

--train_rows repeats the train split's rows up to that count, so a partial data set (as much as fits on the
machine) is timed at the size of the full one; the test AUC of such a run says nothing about quality.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loops import BusySampler, dataloader_loop, our_loop  # noqa: E402
from common.augment import window_samples  # noqa: E402
from common.config import TrainConfig  # noqa: E402
from common.data import TrainBatches  # noqa: E402
from common.datadir import SPLITS, fingerprint_arrays, load_meta, load_split, write_json_atomic  # noqa: E402
from common.run import amp_dtype_for  # noqa: E402
from common.train import train  # noqa: E402
from common.traindata import load_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def derived_data_dir(src: Path, dest: Path, train_rows: int | None = None, upsample: int = 1) -> Path:
    """A copy of a data dir with its train rows repeated up to `train_rows` and/or every split resampled
    `upsample` times faster (scipy's polyphase filter), as a stand-in of the same shape as the real thing."""
    from scipy.signal import resample_poly

    meta = load_meta(src)
    dest.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        X, y = load_split(src, split)
        rows = np.resize(np.arange(len(X)), train_rows) if split == "train" and train_rows else np.arange(len(X))
        out = np.lib.format.open_memmap(dest / f"X_{split}.npy", "w+", np.float32,
                                        (len(rows), X.shape[1], X.shape[2] * upsample))
        for first in range(0, len(rows), 1024):
            block = np.asarray(X[rows[first:first + 1024]])
            out[first:first + len(block)] = resample_poly(block, upsample, 1, axis=-1) if upsample > 1 else block
        out.flush()
        np.save(dest / f"y_{split}.npy", y[rows])
        meta["counts"][split] = len(rows)
        listed = meta.get("splits", {}).get(split, {})
        meta.setdefault("splits", {})[split] = {key: [ids[i] for i in rows] for key, ids in listed.items()}
    meta.update(fs=meta["fs"] * upsample, length=meta["length"] * upsample, fingerprint=fingerprint_arrays(dest))
    write_json_atomic(dest / "meta.json", meta)
    return dest


def timed_training(cfg: TrainConfig) -> dict:
    """train(cfg) with the wall time and the GPU's busy fraction sampled over the whole run."""
    with BusySampler(torch.device(cfg.device), every=0.1) as sampler:
        started = time.perf_counter()
        report = train(cfg)
        wall = time.perf_counter() - started
    with open(Path(cfg.ckpt_dir) / "history.csv", newline="") as f:
        seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
    return {"wall_s": round(wall, 1), "train_samples_per_s": report["samples_per_second"],
            "mean_epoch_s": round(float(np.mean(seconds)), 2), "gpu_busy_whole_run": sampler.busy,
            "test_macro_auc": report["test"]["macro_auc"], "val_macro_auc": report["val"]["macro_auc"]}


def percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{fraction:.0%}"


def loop_comparison(data_dir: Path, batches: int, device: torch.device) -> dict:
    """Samples/s and GPU busy of the pipeline's loop and of the DataLoader loop on the same train split."""
    cfg = TrainConfig()
    data = load_data(data_dir, cfg.window_seconds)
    X, y, norm, fs = data.X["train"], data.y["train"], data.norm, data.input_shape["fs"]
    window, amp = window_samples(cfg.window_seconds, fs), amp_dtype_for(cfg.amp, device)
    batches_of = TrainBatches(X, y, norm, window, fs, cfg.augment, cfg.seed, 0, device,
                              "device" if device.type == "cuda" else "ram")
    graphs = device.type == "cuda"
    data_path, ours = our_loop(batches_of, y.shape[1], True, cfg, device, amp, batches, 10, cuda_graphs=graphs)
    _, eager = our_loop(batches_of, y.shape[1], True, cfg, device, amp, batches, 10)
    plain = dataloader_loop(np.asarray(X), y, norm, window, cfg, device, amp, batches, 10, workers=4,
                            pin_memory=True)
    return {"ours_samples_per_s": round(ours.samples_per_second), "ours_gpu_busy": ours.gpu_busy,
            "ours_eager_samples_per_s": round(eager.samples_per_second), "ours_eager_gpu_busy": eager.gpu_busy,
            "data_path_share": ours.samples_per_second / data_path.samples_per_second,
            "dataloader_samples_per_s": round(plain.samples_per_second), "dataloader_gpu_busy": plain.gpu_busy,
            "speedup": ours.samples_per_second / plain.samples_per_second}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", type=Path, required=True, help="a 100 Hz data dir (preprocess.py)")
    p.add_argument("--out", type=Path, default=Path("bench/out/gpu"), help="run dirs and results.json")
    p.add_argument("--train_rows", type=int, help="repeat train rows up to this count (timing at full size)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of the timed baseline run")
    p.add_argument("--loop_batches", type=int, default=3000,
                   help="timed batches of each loop in the comparison (enough seconds for NVML busy samples)")
    p.add_argument("--device", default="cuda", help="cpu rehearses every step on the CPU (small data only)")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible to torch: nothing to check here (run this on a GPU machine)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}", flush=True)
    results: dict = {"device": name, "torch": torch.__version__}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_cuda.py"], cwd=ROOT,
                           capture_output=True, text=True)
    results["cuda_tests"] = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-500:]
    print("cuda tests:", results["cuda_tests"], flush=True)

    data_100 = derived_data_dir(args.data_dir, args.out / "data100", train_rows=args.train_rows) \
        if args.train_rows else args.data_dir
    n_train = len(np.load(data_100 / "y_train.npy"))
    base = TrainConfig(data_dir=str(data_100), ckpt_dir=str(args.out / "baseline"), epochs=args.epochs,
                       device=args.device, overwrite=True)
    results["baseline_100hz"] = {"train_records": n_train, **timed_training(base)}
    print("baseline:", results["baseline_100hz"], flush=True)
    results["loops_100hz"] = loop_comparison(data_100, args.loop_batches, device)
    print("loops:", results["loops_100hz"], flush=True)

    data_500 = derived_data_dir(args.data_dir, args.out / "data500", upsample=5)
    one_epoch = TrainConfig(data_dir=str(data_500), ckpt_dir=str(args.out / "epoch500"), epochs=1, device=args.device,
                            overwrite=True)
    results["one_epoch_500hz"] = {"train_records": len(np.load(data_500 / "y_train.npy")),
                                  **timed_training(one_epoch)}
    print("500 Hz epoch:", results["one_epoch_500hz"], flush=True)
    write_json_atomic(args.out / "results.json", results)

    b, lo, e5 = results["baseline_100hz"], results["loops_100hz"], results["one_epoch_500hz"]
    print(f"\n| {results['device']} | value |\n|---|---|")
    print(f"| CUDA tests | {results['cuda_tests']} |")
    print(f"| 100 Hz baseline, {args.epochs} epochs on {b['train_records']:,} train records: wall s | {b['wall_s']} |")
    print(f"| ... training samples/s / mean epoch s (incl. validation) | {b['train_samples_per_s']:,.0f} / "
          f"{b['mean_epoch_s']} |")
    print(f"| ... GPU busy over the whole run (sampled) | {percent(b['gpu_busy_whole_run'])} |")
    print(f"| pipeline loop: samples/s, GPU busy, data-path share | {lo['ours_samples_per_s']:,}, "
          f"{percent(lo['ours_gpu_busy'])}, {lo['data_path_share']:.1%} |")
    print(f"| pipeline loop without CUDA graphs: samples/s, GPU busy | {lo['ours_eager_samples_per_s']:,}, "
          f"{percent(lo['ours_eager_gpu_busy'])} |")
    print(f"| DataLoader loop (4 workers, pinned): samples/s, GPU busy | {lo['dataloader_samples_per_s']:,}, "
          f"{percent(lo['dataloader_gpu_busy'])} |")
    print(f"| pipeline / DataLoader | {lo['speedup']:.1f}x |")
    print(f"| 500 Hz: one epoch on {e5['train_records']:,} records: samples/s, epoch s (incl. validation) | "
          f"{e5['train_samples_per_s']:,.0f}, {e5['mean_epoch_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
