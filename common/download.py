"""Fetch PTB-XL from PhysioNet and verify every file against its SHA256SUMS.txt: the whole of download_ptbxl.py.

A file is streamed into `<name>.part` and renamed to its own name only once its SHA-256 matches, so a name
without .part always holds a verified file. An interrupted transfer leaves the .part, which the next attempt
(or run) continues with an HTTP Range request; transient failures are retried with exponential backoff, and a
file whose checksum fails is fetched afresh once, then reported. Only the standard library speaks HTTP.
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from common.datadir import atomic_file, file_sha256
from common.locks import FileLock, try_lock
from common.outputs import check_writable, new_folders

log = logging.getLogger("download")

DEFAULT_BASE_URL = "https://physionet.org/files/ptb-xl/1.0.3/"
SUMS_NAME = "SHA256SUMS.txt"
RECORD_DIRS = {"100": "records100", "500": "records500"}
SAMPLING_RATES = ("100", "500", "both")
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 16
USER_AGENT = "download_ptbxl.py (python urllib)"
TRANSIENT_STATUS = {408, 425, 429}  # besides every 5xx
SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
T = TypeVar("T")


@dataclass
class DownloadConfig:
    """What download_ptbxl.py fetches, from where, and how hard it tries."""

    out_dir: Path
    sampling_rate: str = "both"
    base_url: str = DEFAULT_BASE_URL
    workers: int = 8
    retries: int = 5
    backoff_seconds: float = 1.0
    timeout_seconds: float = 60.0


@dataclass
class Outcome:
    """How one file ended: 'present' (verified before this run), 'fetched' (verified now) or 'failed' (reason)."""

    path: str
    status: str
    reason: str = ""


class FetchError(RuntimeError):
    """A failed HTTP request; transient ones (connection lost, 5xx, 429) are worth retrying."""

    def __init__(self, reason: str, transient: bool, status: int | None = None):
        super().__init__(reason)
        self.transient = transient
        self.status = status


class Stopped(Exception):
    """Raised in a worker thread once the run is being interrupted."""


def parse_sums(text: str, source: str) -> dict[str, str]:
    """SHA256SUMS.txt (`<sha256>  <relative path>` per line) -> {path: sha256}; paths leaving the folder are refused."""
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = SUMS_LINE.fullmatch(line.rstrip("\r"))
        path = PurePosixPath(match.group(2)) if match else None
        if path is None or path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
            raise ValueError(f"{source} line {number} is not '<sha256>  <relative path>': {line[:120]!r}; "
                             "check --base_url")
        sums[str(path)] = match.group(1).lower()
    if not sums:
        raise ValueError(f"{source} lists no files; check --base_url")
    return sums


def select_files(sums: dict[str, str], sampling_rate: str) -> dict[str, str]:
    """The files to fetch: everything outside the record trees, plus the record trees of the chosen rate(s)."""
    if sampling_rate not in SAMPLING_RATES:
        raise ValueError(f"--sampling_rate must be one of {', '.join(SAMPLING_RATES)}, got {sampling_rate!r}")
    skipped = {tree for rate, tree in RECORD_DIRS.items() if sampling_rate not in (rate, "both")}
    return {path: sha for path, sha in sums.items() if path.split("/", 1)[0] not in skipped}


def part_path(dest: Path) -> Path:
    """The temporary name a file is downloaded under until its checksum matches."""
    return dest.with_name(dest.name + PART_SUFFIX)


class Downloader:
    """Fetches files from one base URL into out_dir; safe to call fetch_file from several threads."""

    def __init__(self, cfg: DownloadConfig):
        self.cfg = cfg
        self.base_url = cfg.base_url if cfg.base_url.endswith("/") else cfg.base_url + "/"
        self.stop = threading.Event()
        self.bytes_received = 0
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        """URL of a path relative to the dataset folder."""
        return self.base_url + urllib.parse.quote(path)

    def _open(self, url: str, offset: int = 0) -> http.client.HTTPResponse:
        """GET url (from byte offset when it is not 0), turning every network failure into a FetchError."""
        headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=self.cfg.timeout_seconds)
        except urllib.error.HTTPError as e:
            e.close()
            raise FetchError(f"HTTP {e.code} {e.reason}", e.code >= 500 or e.code in TRANSIENT_STATUS, e.code) from None
        except urllib.error.URLError as e:
            raise FetchError(f"connection failed: {e.reason}", True) from None
        except (OSError, http.client.HTTPException) as e:
            raise FetchError(f"connection failed: {e!r}", True) from None

    def _read(self, resp: http.client.HTTPResponse) -> bytes:
        """The next bytes of a response as they arrive (b'' at its end); a lost connection is a FetchError."""
        if self.stop.is_set():
            raise Stopped
        try:
            chunk = resp.read1(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as e:
            raise FetchError(f"connection lost: {e!r}", True) from None
        with self._lock:
            self.bytes_received += len(chunk)
        return chunk

    def _retrying(self, what: str, attempt_once: Callable[[], T]) -> T:
        """Call attempt_once until it succeeds, a permanent FetchError, or cfg.retries retries with backoff."""
        for attempt in range(self.cfg.retries + 1):
            try:
                return attempt_once()
            except FetchError as e:
                if not e.transient or attempt == self.cfg.retries:
                    if attempt:
                        raise FetchError(f"{e} (after {attempt + 1} attempts)", e.transient, e.status) from None
                    raise
                delay = self.cfg.backoff_seconds * 2 ** attempt
                log.info("%s: %s; retrying in %.3g s", what, e, delay)
                if self.stop.wait(delay):
                    raise Stopped from None

    def fetch_bytes(self, path: str) -> bytes:
        """A small file, whole, into memory (SHA256SUMS.txt), with retries."""
        def once() -> bytes:
            with self._open(self.url(path)) as resp:
                data = b"".join(iter(lambda: self._read(resp), b""))
                length = resp.headers.get("Content-Length")
                if length is not None and len(data) < int(length):
                    raise FetchError(f"connection closed after {len(data)} of {length} bytes", True)
                return data
        return self._retrying(path, once)

    def _continue_part(self, path: str, part: Path) -> None:
        """One request that appends the rest of the file to part (restarting it when the server ignores Range)."""
        offset = part.stat().st_size if part.exists() else 0
        try:
            resp = self._open(self.url(path), offset)
        except FetchError as e:
            if e.status == 416 and offset:  # the .part already holds every byte: its checksum decides
                return
            raise
        with resp:
            remaining = resp.headers.get("Content-Length")
            if resp.status == 206:
                match = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
                if match is None or int(match.group(1)) != offset:
                    part.unlink(missing_ok=True)
                    raise FetchError(f"the server answered 'Range: bytes={offset}-' with Content-Range "
                                     f"{resp.headers.get('Content-Range')!r}; restarting the file", True)
                remaining = int(match.group(2)) - offset + 1
            elif resp.status == 200:
                if offset:
                    log.info("%s: the server ignored the Range request; fetching the whole file again", path)
                offset = 0
            else:
                raise FetchError(f"unexpected HTTP {resp.status} {resp.reason}", True, resp.status)
            received = 0
            with open(part, "ab" if offset else "wb") as f:
                while chunk := self._read(resp):
                    f.write(chunk)
                    received += len(chunk)
        if remaining is not None and received < int(remaining):
            raise FetchError(f"connection closed after {offset + received} of {offset + int(remaining)} bytes", True)

    def fetch_file(self, path: str, sha256: str) -> Outcome:
        """Bring out_dir/path to the content whose SHA-256 is sha256: skip it when it is there, else fetch it."""
        dest = self.cfg.out_dir / path
        if dest.is_file():
            if file_sha256(dest) == sha256:
                return Outcome(path, "present")
            log.info("%s: present but its checksum differs; fetching it again", path)
            dest.unlink()
        part = part_path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # the second pass starts afresh, once, after a checksum mismatch
            try:
                self._retrying(path, lambda: self._continue_part(path, part))
            except FetchError as e:
                return Outcome(path, "failed", str(e))
            got = file_sha256(part)
            if got == sha256:
                os.replace(part, dest)
                return Outcome(path, "fetched")
            part.unlink()
        return Outcome(path, "failed", f"checksum mismatch on both tries (SHA-256 {got[:16]}..., expected "
                                       f"{sha256[:16]}...); nothing kept")


def lock_dir(out_dir: Path) -> FileLock:
    """Create out_dir and lock it (common/locks.py: released when the process ends) so two downloads never share a
    .part."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = try_lock(out_dir)
    if lock is None:
        raise ValueError(f"another download is writing into {out_dir}; wait for it to end")
    return lock


def download(cfg: DownloadConfig, command: str = "download_ptbxl.py") -> list[Outcome]:
    """Fetch and verify the selected PTB-XL files into cfg.out_dir; returns the failed ones (empty: all verified).
    A run that fails or is interrupted before it wrote anything leaves no folder it made."""
    url = urllib.parse.urlsplit(cfg.base_url)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"--base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, got {cfg.base_url!r}")
    if cfg.workers < 1 or cfg.retries < 0:
        raise ValueError(f"--workers must be at least 1 and --retries at least 0, got {cfg.workers} and {cfg.retries}")
    cfg.out_dir = Path(cfg.out_dir)
    check_writable(cfg.out_dir, "--out_dir", folder=True)
    with new_folders(cfg.out_dir):
        lock = lock_dir(cfg.out_dir)
        try:
            return _download_locked(cfg, command)
        finally:
            lock.release()


def _download_locked(cfg: DownloadConfig, command: str) -> list[Outcome]:
    """download() once out_dir is locked."""
    fetcher = Downloader(cfg)
    try:
        sums_text = fetcher.fetch_bytes(SUMS_NAME).decode("utf-8", errors="replace")
    except FetchError as e:
        raise FetchError(f"cannot fetch {fetcher.url(SUMS_NAME)}: {e}; check --base_url and the network, then re-run",
                         e.transient, e.status) from None
    files = select_files(parse_sums(sums_text, fetcher.url(SUMS_NAME)), cfg.sampling_rate)
    with atomic_file(cfg.out_dir / SUMS_NAME) as f:
        f.write(sums_text)
    log.info("%d files to verify (sampling rate %s) from %s into %s",
             len(files), cfg.sampling_rate, fetcher.base_url, cfg.out_dir)
    started, counts, failed = time.monotonic(), {"present": 0, "fetched": 0}, []
    with logging_redirect_tqdm(), tqdm(total=len(files), unit="file", desc="PTB-XL") as bar, \
            ThreadPoolExecutor(cfg.workers) as pool:
        futures = [pool.submit(fetcher.fetch_file, path, sha) for path, sha in sorted(files.items())]
        try:
            for future in as_completed(futures):
                outcome = future.result()
                if outcome.status == "failed":
                    failed.append(outcome)
                else:
                    counts[outcome.status] += 1
                bar.set_postfix_str(f"{fetcher.bytes_received / 1e6:.1f} MB, {len(failed)} failed", refresh=False)
                bar.update()
        except BaseException:
            fetcher.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            log.warning("stopped: partial files are kept as *%s; resume with: python %s", PART_SUFFIX, command)
            raise
    for outcome in sorted(failed, key=lambda o: o.path):
        log.error("FAILED %s: %s", outcome.path, outcome.reason)
    log.info("%d of %d files verified (%d fetched, %d already present), %d failed; %.1f MB received in %.0f s%s",
             counts["present"] + counts["fetched"], len(files), counts["fetched"], counts["present"], len(failed),
             fetcher.bytes_received / 1e6, time.monotonic() - started,
             f"; re-run to retry: python {command}" if failed else "")
    return failed
