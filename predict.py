"""Predict the classes of new ECG recordings with trained checkpoints, or export one as ONNX; see README."""
import argparse
import logging
import sys
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before torch loads: Ctrl-C at start-up ends without a traceback

from common.errors import ConfigError  # noqa: E402
from common.export import export_onnx  # noqa: E402
from common.inference import run_predict  # noqa: E402

BAD_INPUT = (OSError, ValueError, RuntimeError)  # RuntimeError: an ONNX export onnxruntime does not reproduce


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--ckpt", type=Path, action="append", required=True,
                   help="trained checkpoint (best.pt), or the --ckpt_dir of an ensemble (train_1d_baseline.py "
                        "--seeds); repeat to average several")
    task = p.add_mutually_exclusive_group(required=True)
    task.add_argument("--input", type=Path,
                      help="a WFDB record (.hea), a folder of records (searched recursively), a PTB-XL folder "
                           "(ptbxl_database.csv) or an .npy array (records, leads, samples) with --fs and --leads")
    task.add_argument("--export", type=Path, metavar="MODEL.onnx",
                      help="write the checkpoint as an ONNX window scorer and MODEL.json describing its use")
    p.add_argument("--out", type=Path, default=Path("predictions.csv"),
                   help="predictions CSV; skipped records go to <stem>.skipped.csv beside it")
    p.add_argument("--fs", type=float, default=None, help=".npy input: sampling rate in Hz")
    p.add_argument("--leads", default=None, help=".npy input: lead names of its channels, comma-separated")
    p.add_argument("--adc_gain", type=float, default=None,
                   help=".npy input of integers (raw ADC counts): ADC units per mV, to convert them to mV")
    p.add_argument("--labels", default=None, metavar="LABELS.csv|dx",
                   help="--input only: score the predictions against known labels and write <out stem>.metrics.json "
                        "(AUC per class and macro, bootstrap 95 %% intervals): a CSV with a record column and "
                        "1/0/blank columns named as the model's classes (blank = unknown), or the word dx for the "
                        "#Dx codes of each WFDB header (a file named dx: ./dx)")
    p.add_argument("--dx_map", type=Path, default=None,
                   help="--labels dx: a CSV mapping SNOMED codes to the model's classes (columns snomed_code,"
                        "superclass) instead of the shipped common/dx_map.csv")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch_size", type=int, default=512, help="windows per forward pass")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.dx_map is not None and args.labels != "dx":
        raise ConfigError("--dx_map maps the #Dx codes of --labels dx; add --labels dx, or drop --dx_map")
    if args.export is not None:
        if args.labels is not None:
            raise ConfigError("--labels scores the predictions of --input records; use it with --input, not --export")
        if len(args.ckpt) != 1 or args.ckpt[0].is_dir():
            raise ConfigError("--export takes one checkpoint file: an ensemble's mean over members is not one window "
                              "scorer")
        export_onnx(args.ckpt[0], args.export)
        return 0
    leads = [name.strip() for name in args.leads.split(",")] if args.leads else None
    return run_predict(args.ckpt, args.input, args.out, args.fs, leads, args.device, args.batch_size, args.labels,
                       args.dx_map, args.adc_gain)


if __name__ == "__main__":
    sys.exit(run_cli(main, BAD_INPUT))
