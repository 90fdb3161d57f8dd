"""download_ptbxl.py against a local HTTP server serving a small PTB-XL mirror: clean download, resume with Range,
a server ignoring Range, corrupt and missing files, Ctrl-C. Entirely offline."""
from __future__ import annotations

import collections
import errno
import hashlib
import os
import re
import shutil
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, run_repo_script

from common.download import SUMS_NAME, DownloadConfig, FetchError, Outcome, download, lock_dir, parse_sums

RECORD_IDS = ("00001", "00002", "00003")
BIG = "records500/00000/00002_hr.dat"  # 120,000 bytes: the file the interruption tests cut


@pytest.fixture(scope="module")
def mirror(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A handful of sample records at both rates plus the CSVs, with the mirror's own SHA256SUMS.txt."""
    root = tmp_path_factory.mktemp("mirror")
    paths = ["ptbxl_database.csv", "scp_statements.csv"] + [
        f"records{rate}/00000/{ecg_id}_{suffix}.{ext}" for rate, suffix in ((100, "lr"), (500, "hr"))
        for ecg_id in RECORD_IDS for ext in ("hea", "dat")]
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample_dir / path, root / path)
    (root / SUMS_NAME).write_text("".join(f"{hashlib.sha256((root / p).read_bytes()).hexdigest()}  {p}\n"
                                          for p in sorted(paths)))
    return root


class MirrorServer(ThreadingHTTPServer):
    """Serves a folder with Range support, counting the body bytes it sends per path; faults are set per test."""

    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.root = root
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.sent: collections.Counter[str] = collections.Counter()
        self.drop_after: dict[str, int] = {}  # close the connection after this many body bytes, the first time
        self.corrupt: set[str] = set()
        self.missing: set[str] = set()
        self.trickle: dict[str, int] = {}  # after this many bytes, one byte per 20 ms until released
        self.ignore_range = False
        self.release = threading.Event()

    @property
    def url(self) -> str:
        """The mirror's dataset folder, laid out like PhysioNet's."""
        return f"http://127.0.0.1:{self.server_port}/files/ptb-xl/1.0.3/"

    def requested(self, path: str) -> list[str | None]:
        """The Range headers of the requests made for path, in order."""
        return [rng for p, rng in self.requests if p == path]


class RangeHandler(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-` (206 + Content-Range, 416 past the end), and the faults MirrorServer asks for."""

    server: MirrorServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        path = urllib.parse.unquote(self.path).removeprefix("/files/ptb-xl/1.0.3/")
        with srv.lock:
            srv.requests.append((path, self.headers.get("Range")))
            drop_after = srv.drop_after.pop(path, None)
        file = srv.root / path
        if path in srv.missing or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        if path in srv.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        match = None if srv.ignore_range else re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if drop_after is not None:
            body = body[:drop_after]
        try:
            if path in srv.trickle:
                self._send(path, body[:srv.trickle[path]])
                for i in range(srv.trickle[path], len(body)):
                    if srv.release.wait(0.02):
                        break
                    self._send(path, body[i:i + 1])
            else:
                self._send(path, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, path: str, chunk: bytes) -> None:
        self.wfile.write(chunk)
        with self.server.lock:
            self.server.sent[path] += len(chunk)


@pytest.fixture
def server(mirror: Path):
    """A MirrorServer of the mirror on 127.0.0.1, in a thread, for one test."""
    srv = MirrorServer(mirror)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def fetch(srv: MirrorServer, out: Path, **overrides: object) -> list[Outcome]:
    """download() from the test server, with short backoff and timeouts."""
    cfg = DownloadConfig(**{"out_dir": out, "base_url": srv.url, "workers": 2, "retries": 2,
                            "backoff_seconds": 0.01, "timeout_seconds": 5.0, **overrides})
    return download(cfg, "download_ptbxl.py --out_dir OUT")


def listed(mirror: Path) -> list[str]:
    """The paths the mirror's SHA256SUMS.txt lists."""
    return sorted(parse_sums((mirror / SUMS_NAME).read_text(), SUMS_NAME))


def parts(out: Path) -> list[Path]:
    """Every .part file left under out."""
    return sorted(out.rglob("*.part"))


def test_clean_download_is_byte_identical_and_a_rerun_fetches_nothing(server, mirror, tmp_path):
    out = tmp_path / "ptb-xl"
    assert fetch(server, out) == []
    for path in listed(mirror) + [SUMS_NAME]:
        assert (out / path).read_bytes() == (mirror / path).read_bytes(), path
    assert parts(out) == []
    server.requests.clear()
    assert fetch(server, out) == []
    assert server.requests == [(SUMS_NAME, None)]


def test_cli_sampling_rate_100_fetches_no_records500_file(server, mirror, tmp_path):
    out = tmp_path / "ptb-xl"
    result = run_repo_script("download_ptbxl.py", "--out_dir", out, "--sampling_rate", "100", "--base_url",
                             server.url, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not any(path.startswith("records500") for path, _ in server.requests)
    assert not (out / "records500").exists()
    wanted = [p for p in listed(mirror) if not p.startswith("records500/")]
    assert len(wanted) == 2 + 2 * len(RECORD_IDS)
    for path in wanted:
        assert (out / path).read_bytes() == (mirror / path).read_bytes(), path
    assert "8 of 8 files verified" in result.stderr


def test_dropped_connection_resumes_with_only_the_missing_bytes(server, mirror, tmp_path):
    out, size = tmp_path / "ptb-xl", (mirror / BIG).stat().st_size
    cut = 40_000
    server.drop_after[BIG] = cut
    failed = fetch(server, out, retries=0)
    assert [o.path for o in failed] == [BIG] and f"connection closed after {cut} of {size} bytes" in failed[0].reason
    assert not (out / BIG).exists() and (out / (BIG + ".part")).stat().st_size == cut
    sent_before = server.sent[BIG]
    assert fetch(server, out) == []
    assert server.requested(BIG) == [None, f"bytes={cut}-"]
    assert (sent_before, server.sent[BIG] - sent_before) == (cut, size - cut)
    assert (out / BIG).read_bytes() == (mirror / BIG).read_bytes() and parts(out) == []


def test_dropped_connection_is_retried_within_the_run(server, mirror, tmp_path):
    out, size = tmp_path / "ptb-xl", (mirror / BIG).stat().st_size
    server.drop_after[BIG] = 1000
    assert fetch(server, out) == []
    assert server.requested(BIG) == [None, "bytes=1000-"] and server.sent[BIG] == size
    assert (out / BIG).read_bytes() == (mirror / BIG).read_bytes()


def test_server_ignoring_range_restarts_the_file(server, mirror, tmp_path):
    out, size = tmp_path / "ptb-xl", (mirror / BIG).stat().st_size
    (out / BIG).parent.mkdir(parents=True)
    (out / (BIG + ".part")).write_bytes(b"x" * 5000)
    server.ignore_range = True
    assert fetch(server, out) == []
    assert server.requested(BIG) == ["bytes=5000-"] and server.sent[BIG] == size
    assert (out / BIG).read_bytes() == (mirror / BIG).read_bytes() and parts(out) == []


def test_complete_part_is_verified_without_transferring_it(server, mirror, tmp_path):
    out = tmp_path / "ptb-xl"
    (out / BIG).parent.mkdir(parents=True)
    shutil.copyfile(mirror / BIG, out / (BIG + ".part"))
    assert fetch(server, out) == []
    assert server.sent[BIG] == 0 and (out / BIG).read_bytes() == (mirror / BIG).read_bytes()


def test_corrupt_file_is_fetched_again_once_then_reported(server, mirror, tmp_path):
    out, bad = tmp_path / "ptb-xl", "records100/00000/00002_lr.dat"
    server.corrupt.add(bad)
    failed = fetch(server, out)
    assert [o.path for o in failed] == [bad] and "checksum mismatch" in failed[0].reason
    assert server.requested(bad) == [None, None]
    assert not (out / bad).exists() and parts(out) == []
    assert all((out / p).is_file() for p in listed(mirror) if p != bad)


def test_missing_file_is_reported_and_the_others_fetched(server, mirror, tmp_path):
    out, gone = tmp_path / "ptb-xl", "records100/00000/00003_lr.hea"
    server.missing.add(gone)
    failed = fetch(server, out)
    assert [(o.path, o.reason) for o in failed] == [(gone, "HTTP 404 Not Found")]
    assert server.requested(gone) == [None]
    assert all((out / p).read_bytes() == (mirror / p).read_bytes() for p in listed(mirror) if p != gone)


def test_cli_names_each_problem_in_one_line_and_exits_nonzero(server, tmp_path):
    bad, gone = "records100/00000/00002_lr.dat", "scp_statements.csv"
    server.corrupt.add(bad)
    server.missing.add(gone)
    result = run_repo_script("download_ptbxl.py", "--out_dir", tmp_path / "ptb-xl", "--base_url", server.url,
                             timeout=60)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(problems) == 2 and problems[0].startswith(f"FAILED {bad}: checksum mismatch on both tries")
    assert problems[1] == f"FAILED {gone}: HTTP 404 Not Found"
    assert "12 of 14 files verified" in result.stderr


@pytest.mark.posix_signals
def test_ctrl_c_keeps_the_part_exits_130_and_the_next_run_resumes(server, mirror, tmp_path):
    out, size = tmp_path / "ptb-xl", (mirror / BIG).stat().st_size
    server.trickle[BIG] = 30_000
    command = [sys.executable, str(ROOT / "download_ptbxl.py"), "--out_dir", str(out), "--base_url", server.url]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part, deadline = out / (BIG + ".part"), time.time() + 30
    while time.time() < deadline and proc.poll() is None and server.sent[BIG] < 30_010:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and f"resume with: python {shlex.join(command[1:])}\n" in err, err
    kept = part.read_bytes()
    assert len(kept) >= 30_000 and (mirror / BIG).read_bytes().startswith(kept) and not (out / BIG).exists()
    server.trickle.clear()
    sent_before = server.sent[BIG]
    assert fetch(server, out) == []
    assert server.sent[BIG] - sent_before == size - len(kept)
    assert (out / BIG).read_bytes() == (mirror / BIG).read_bytes()


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="relative path"):
        parse_sums(f"{'0' * 64}  ../../etc/passwd\n", "SUMS")
    with pytest.raises(ValueError, match="http"):
        download(DownloadConfig(out_dir=tmp_path, base_url="ftp://example.org/"))
    lock = lock_dir(tmp_path / "busy")
    try:
        with pytest.raises(ValueError, match="another download"):
            download(DownloadConfig(out_dir=tmp_path / "busy", base_url="http://127.0.0.1:9/"))
    finally:
        lock.release()


def tree(root: Path) -> list[str]:
    """Every file and folder under root, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_cli_out_dir_that_is_or_runs_through_a_file_exits_2_naming_flag_path_and_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    through = f"runs through {tmp_path / 'afile'}, which is not a folder"
    for out_dir, reason in ((tmp_path / "afile", "is a file, not a folder"), (tmp_path / "afile" / "ptb-xl", through)):
        result = run_repo_script("download_ptbxl.py", "--out_dir", out_dir, "--base_url", "http://127.0.0.1:9/",
                                 timeout=60)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: --out_dir {out_dir} {reason}; choose another --out_dir")
        assert tree(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == "not a folder\n"


def test_read_only_out_dir_is_refused_before_any_request_naming_it(server, tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *rest, **kwargs):
        if Path(path) == tmp_path or Path(path).parent in (tmp_path, tmp_path / "ptb-xl"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *rest, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ValueError) as refusal:
        fetch(server, tmp_path / "ptb-xl")
    assert str(refusal.value) == (f"--out_dir {tmp_path / 'ptb-xl'} cannot be written: Read-only file system "
                                  f"({tmp_path}); choose another --out_dir")
    assert server.requests == [] and tree(tmp_path) == []


def test_failed_first_request_leaves_no_empty_out_dir(server, tmp_path):
    server.missing.add(SUMS_NAME)
    with pytest.raises(FetchError, match="cannot fetch"):
        fetch(server, tmp_path / "new" / "ptb-xl")
    assert tree(tmp_path) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(FetchError, match="cannot fetch"):
        fetch(server, tmp_path / "kept")
    assert tree(tmp_path) == ["kept"]
