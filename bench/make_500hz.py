"""Build a PTB-XL folder with records500/ from a restored 100 Hz dev pack, for benchmarks at 500 Hz.

    python bench/make_500hz.py SRC DEST [--workers W] [--overwrite]

SRC is the restored dev pack (python3 ../shared/data/ptbxl100-dev/restore.py SRC). DEST gets the same
PhysioNet layout: the CSVs and LICENSE.txt copied, records100/ hard-linked (symlinked across file
systems), and records500/NN000/NNNNN_hr.{hea,dat} named as filename_hr in ptbxl_database.csv: each
100 Hz record resampled to 500 Hz (5000 samples, polyphase) and written as WFDB format 16, byte for
byte what wfdb.wrsamp writes. These stand in for PTB-XL's real 500 Hz files, which are not available
here; their signals carry nothing above 50 Hz. DEST is built beside itself and moved into place at the end.
"""
import argparse
import json
import os
import shutil
import sys
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.cli import quiet_interrupts, run_cli  # noqa: E402

if __name__ == "__main__":
    quiet_interrupts()  # before numpy and scipy load: Ctrl-C at start-up ends without a traceback

from tqdm import tqdm  # noqa: E402

from common import signals  # noqa: E402
from common.datadir import staged_output_dir  # noqa: E402
from common.errors import ConfigError  # noqa: E402
from common.files import link_file  # noqa: E402
from common.ptbxl import read_database  # noqa: E402
from common.readers import start_worker  # noqa: E402
from demo.dataset import write_wfdb  # noqa: E402

TARGET_FS = 500
TOP_LEVEL_FILES = ("ptbxl_database.csv", "scp_statements.csv", "LICENSE.txt")
MARKER = "make_500hz.json"  # what --overwrite looks for: only a folder this tool wrote is replaced


def write_500hz(paths: tuple[Path, Path]) -> None:
    """Read one 100 Hz record, resample it to 500 Hz and write it in WFDB format 16."""
    source, target = paths
    try:
        x, fs = signals.read_record(source)
    except signals.RecordError as exc:
        raise signals.RecordError(f"{source}: {exc}") from None
    write_wfdb(target, signals.resample(x, fs, TARGET_FS).T, TARGET_FS)


def make_500hz(src: Path, dest: Path, workers: int) -> int:
    """Write DEST (see the module docstring); return the number of 500 Hz records written."""
    database = read_database(src / "ptbxl_database.csv")
    pairs = list(zip(database["filename_lr"].astype(str), database["filename_hr"].astype(str)))
    with staged_output_dir(dest) as tmp:
        for name in TOP_LEVEL_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        shutil.copytree(src / "records100", tmp / "records100", copy_function=lambda a, b: link_file(Path(a), Path(b)))
        jobs = [(src / lr, tmp / hr) for lr, hr in pairs]
        with get_context().Pool(workers, start_worker) as pool:
            for _ in tqdm(pool.imap_unordered(write_500hz, jobs, chunksize=64), total=len(jobs), desc="500 Hz records",
                          unit="rec"):
                pass
        (tmp / MARKER).write_text(json.dumps({"source": str(src.resolve()), "records": len(jobs)}) + "\n")
    return len(jobs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="restored PTB-XL dev pack (ptbxl_database.csv, records100/)")
    p.add_argument("dest", type=Path, help="folder to create")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--overwrite", action="store_true", help="replace DEST when an earlier run of this tool wrote it")
    args = p.parse_args()
    if args.dest.exists() and not args.overwrite:
        raise ConfigError(f"{args.dest} exists; pass --overwrite to replace it, or choose another DEST")
    if args.dest.exists() and not (args.dest / MARKER).is_file():
        raise ConfigError(f"{args.dest} was not written by this tool (no {MARKER}), so --overwrite does not replace "
                          "it; choose another DEST")
    count = make_500hz(args.src, args.dest, max(1, args.workers))
    print(f"wrote {args.dest}: {count} records at {TARGET_FS} Hz in records500/, records100/ linked")


if __name__ == "__main__":
    sys.exit(run_cli(main))
