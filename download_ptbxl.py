"""Download PTB-XL 1.0.3 from PhysioNet, verifying every file against SHA256SUMS.txt; re-run to resume. See README."""
import argparse
import logging
import shlex
import sys
from pathlib import Path

from common.cli import quiet_interrupts, run_cli

if __name__ == "__main__":
    quiet_interrupts()  # Ctrl-C ends with exit 130, keeping the .part files for the next run

from common.download import DEFAULT_BASE_URL, SAMPLING_RATES, DownloadConfig, FetchError, download  # noqa: E402
from common.errors import PipelineError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> DownloadConfig:
    """Command line -> DownloadConfig."""
    defaults = DownloadConfig(out_dir=Path("data/ptb-xl-1.0.3"))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out_dir", type=Path, default=defaults.out_dir, help="dataset folder (PhysioNet layout)")
    p.add_argument("--sampling_rate", choices=SAMPLING_RATES, default=defaults.sampling_rate,
                   help="record files to fetch: records100/, records500/ or both (metadata files always)")
    p.add_argument("--base_url", default=DEFAULT_BASE_URL, help="dataset folder URL holding SHA256SUMS.txt")
    p.add_argument("--workers", type=int, default=defaults.workers, help="files fetched at once")
    p.add_argument("--retries", type=int, default=defaults.retries,
                   help="retries of a failed request, with exponential backoff")
    return DownloadConfig(**vars(p.parse_args(argv)))


def main() -> int:
    """Exit 1 when a file failed (each is listed) or the checksum list could not be fetched."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = parse_args()
    try:
        failed = download(cfg, command=shlex.join(sys.argv))
    except FetchError as exc:
        raise PipelineError(str(exc)) from exc
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
