"""Time predict.py's code path (common.inference.run_predict) on ~2,158 raw 100 Hz WFDB records, on the CPU.

    python bench/predict_speed.py [--input FOLDER] [--ckpt CKPT] [--records 2158] [--threads T]

Without --input, a folder of --records records is made by repeating the PTB-XL sample's 100 Hz records (the
.dat files hard-linked, each header renamed). Without --ckpt, a model of the default size (about 0.25 M
parameters) is trained for one epoch on the sample: its speed, not its quality, is what counts here. The
generated records are read once before timing, so the timing starts from a warm page cache. Python's and
torch's start-up (a few seconds) is not included.
"""
import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.preprocess_speed import warm_cache  # noqa: E402
from common.config import TrainConfig  # noqa: E402
from common.inference import run_predict  # noqa: E402
from common.preprocess import PreprocessConfig, preprocess  # noqa: E402
from common.train import train  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptbxl-sample"


def repeated_records(sample: Path, dest: Path, n: int) -> None:
    """n WFDB records in dest, rec00000 ..., cycling through the sample's 100 Hz records."""
    sources = sorted((sample / "records100").rglob("*.hea"))
    for i in range(n):
        source = sources[i % len(sources)]
        name = f"rec{i:05d}"
        os.link(source.with_suffix(".dat"), dest / f"{name}.dat")
        (dest / f"{name}.hea").write_text(source.read_text().replace(source.stem, name))


def default_model(sample: Path, root: Path) -> Path:
    """best.pt of a default-size model trained one epoch on the sample."""
    preprocess(PreprocessConfig(input_dir=sample, out_dir=root / "data", val_folds=[8], test_folds=[9], workers=1),
               "bench")
    train(TrainConfig(data_dir=str(root / "data"), ckpt_dir=str(root / "ckpt"), epochs=1))
    return root / "ckpt" / "best.pt"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, default=None, help="records to predict (any predict.py --input)")
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint (default: train one on the sample)")
    p.add_argument("--records", type=int, default=2158, help="records in the generated folder")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = args.input
        if folder is None:
            folder = root / "records"
            folder.mkdir()
            repeated_records(SAMPLE, folder, args.records)
            warm_cache(folder, [f"rec{i:05d}" for i in range(args.records)])
        ckpt = args.ckpt or default_model(SAMPLE, root)
        torch.set_num_threads(args.threads)  # after training, which sets its own
        start = time.perf_counter()
        code = run_predict([ckpt], folder, root / "predictions.csv", device="cpu")
        seconds = time.perf_counter() - start
        predicted = sum(1 for _ in open(root / "predictions.csv")) - 1

    print(f"records predicted:   {predicted} (exit code {code})")
    print(f"seconds:             {seconds:.2f} ({predicted / seconds:.0f} records/s, {args.threads} torch threads)")


if __name__ == "__main__":
    main()
