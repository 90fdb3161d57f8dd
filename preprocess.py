"""Preprocess WFDB records (PTB-XL or any WFDB folder + labels CSV) into training arrays; see README."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # before numpy, pandas and scipy load: Ctrl-C at start-up ends without a traceback
    # Imported here only: reader workers started by spawn (macOS, Windows) import this file again, as __mp_main__,
    # and loading pandas there would add most of a second to each worker's start.
    from common.preprocess import PreprocessConfig, preprocess
    from common.ptbxl import PTBXL_TASKS


def parse_args(argv: list[str] | None = None) -> PreprocessConfig:
    """Command line -> PreprocessConfig."""
    defaults = PreprocessConfig(input_dir=Path("raw_data"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input_dir", type=Path, default=defaults.input_dir, help="folder of WFDB records (PTB-XL layout or any)")
    p.add_argument("--meta_csv", type=Path, default=None,
                   help="labels CSV: PTB-XL's ptbxl_database.csv (default, inside --input_dir) or a generic CSV; "
                        "none for a folder of Challenge-format records labelled by their #Dx header lines")
    p.add_argument("--dx_map", type=Path, default=None,
                   help="Challenge-format folder: CSV mapping SNOMED CT codes to classes (columns snomed_code,"
                        "superclass); default: the shipped map to the PTB-XL superclasses (common/dx_map.csv)")
    p.add_argument("--out_dir", type=Path, default=defaults.out_dir)
    p.add_argument("--task", choices=PTBXL_TASKS, default=defaults.task, help="PTB-XL label set")
    p.add_argument("--sampling_rate", type=int, choices=[100, 500], default=None,
                   help="PTB-XL records to read: 100 (filename_lr) or 500 (filename_hr); "
                        "default 100, or 500 when --fs or --length needs more and records500/ is there")
    p.add_argument("--fs", type=float, default=None, help="resample every record to this rate (Hz); default: the records' most common rate")
    p.add_argument("--length", type=int, default=None, help="samples per record after centre-crop / zero-pad; default 10 s")
    p.add_argument("--bandpass", nargs="+", metavar="LOW HIGH | auto | off", default=[defaults.bandpass],
                   help="zero-phase band-pass filter in Hz, applied by predict.py too; auto: 0.5-40 Hz where the rate "
                        "is above 80 Hz, else none")
    p.add_argument("--split", choices=["auto", "folds", "random"], default=defaults.split,
                   help="auto: folds when the CSV has them, else random by patient")
    p.add_argument("--val_folds", type=int, nargs="+", default=defaults.val_folds)
    p.add_argument("--test_folds", type=int, nargs="+", default=defaults.test_folds)
    p.add_argument("--val_frac", type=float, default=None, help="random split only (default 0.1)")
    p.add_argument("--test_frac", type=float, default=None, help="random split only (default 0.1)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random split seed")
    p.add_argument("--record_col", default=defaults.record_col, help="generic CSV: record path column")
    p.add_argument("--label_col", default=defaults.label_col, help="generic CSV: label column")
    p.add_argument("--patient_col", default=defaults.patient_col, help="generic CSV: patient column (optional)")
    p.add_argument("--fold_col", default=defaults.fold_col, help="generic CSV: fold column (optional)")
    p.add_argument("--label_sep", default=defaults.label_sep, help="generic CSV: separator of several labels")
    p.add_argument("--max_skip_frac", type=float, default=defaults.max_skip_frac,
                   help="fail when more than this fraction of records is unreadable")
    p.add_argument("--workers", type=int, default=defaults.workers, help="reader processes")
    p.add_argument("--dedupe", action="store_true",
                   help="keep the first of CSV rows that list one record (same id or file) instead of refusing them")
    p.add_argument("--allow_patient_across_folds", action="store_true",
                   help="split by fold even when a patient's records carry folds of different splits")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the X_/y_ arrays and meta.json of an --out_dir holding another dataset or other "
                        "files (its other files are kept)")
    args = p.parse_args(argv)
    if args.bandpass in (["auto"], ["off"]):
        args.bandpass = args.bandpass[0]
    else:
        try:
            low, high = map(float, args.bandpass)
        except ValueError:
            p.error(f"--bandpass takes LOW HIGH (two numbers, Hz), auto or off, got {' '.join(args.bandpass)}")
        args.bandpass = (low, high)
    return PreprocessConfig(**vars(args))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    preprocess(parse_args(), command=shlex.join(sys.argv))


if __name__ == "__main__":
    sys.exit(run_cli(main, bad_input=(OSError, ValueError, RuntimeError)))
