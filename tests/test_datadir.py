"""common/datadir.py: a data dir is refused when its arrays are not those its meta.json describes; output paths that
cannot be written are named with the reason, never a temporary file, and leave nothing behind."""
import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from common import datadir
from common.datadir import fingerprint_arrays, load_split, staged_output_dir, write_json_atomic
from conftest import ROOT, tiny_write_data_dir, with_preprocess_meta


@pytest.fixture
def data(tmp_path) -> Path:
    """A tiny data dir with preprocess.py's counts in its meta.json."""
    return with_preprocess_meta(tiny_write_data_dir(tmp_path / "data"))


def test_fingerprint_is_deterministic_and_keeps_the_full_digests(data):
    first = fingerprint_arrays(data)
    assert first == fingerprint_arrays(data)
    assert first["X_val.npy"] == datadir.file_sha256(data / "X_val.npy") and len(first["dataset"]) == 64
    assert set(first["quick"]) == set(datadir.ARRAY_NAMES)


def bytes_read() -> int:
    """Bytes this process has read through read() calls so far (Linux /proc/self/io)."""
    return int(re.search(r"rchar: (\d+)", Path("/proc/self/io").read_text()).group(1))


@pytest.mark.linux_only  # counts the bytes read through /proc/self/io
def test_quick_print_reads_a_bounded_sample_of_a_large_array(tmp_path):
    path = tmp_path / "X.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(4000, 12, 1000)).flush()  # 192 MB, sparse
    before = bytes_read()
    original = datadir.quick_print(path)
    assert bytes_read() - before < 5 << 20
    assert datadir.quick_print(path) == original
    X = np.load(path, mmap_mode="r+")
    X[0, 0, 0] = 1.0  # the first block (header and first rows) is always read
    X.flush()
    assert datadir.quick_print(path) != original


@pytest.mark.parametrize("name", ["X_val.npy", "y_test.npy", "X_train.npy"])
def test_an_array_other_than_meta_describes_is_refused(data, name):
    array = np.load(data / name)
    np.save(data / name, array[::-1].copy())  # same rows, other order: only the fingerprint tells
    split = name[2:-4]
    with pytest.raises(ValueError, match=re.escape(f"{name} in {data} is not the array its meta.json describes (")
                       + ".*re-run preprocess.py"):
        load_split(data, split)


def test_a_row_count_other_than_meta_counts_is_refused_also_without_quick_prints(data):
    meta = json.loads((data / "meta.json").read_text())
    del meta["fingerprint"]["quick"]  # a data dir written before the quick prints: checked on rows only
    (data / "meta.json").write_text(json.dumps(meta))
    np.save(data / "X_val.npy", np.load(data / "X_val.npy")[::-1].copy())
    load_split(data, "val")
    for kind in ("X", "y"):
        np.save(data / f"{kind}_val.npy", np.load(data / f"{kind}_val.npy")[:40])
    with pytest.raises(ValueError, match=re.escape(f"X_val.npy in {data} is not the array its meta.json describes "
                                                   f"(40 rows, meta.json counts 48); re-run preprocess.py")):
        load_split(data, "val")


@pytest.mark.parametrize("depth", [1, 2])
def test_writing_through_a_file_names_the_target_and_the_file(tmp_path, depth):
    (tmp_path / "f").write_text("not a folder")
    target = tmp_path / "f" / Path(*["sub"] * (depth - 1)) / "out.json"
    with pytest.raises(OSError, match=re.escape(f"cannot write {target}: {tmp_path / 'f'} is a file")) as info:
        write_json_atomic(target, {"a": 1})
    assert "Errno" not in str(info.value)
    with pytest.raises(OSError, match=re.escape(f"cannot write {target.parent / 'out'}: {tmp_path / 'f'} is a file")):
        with staged_output_dir(target.parent / "out"):
            pytest.fail("staged_output_dir yielded a folder under a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"] and (tmp_path / "f").read_text() == "not a folder"


def test_a_json_target_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'out.json'}: it is a folder")):
        write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"] and not any((tmp_path / "out.json").iterdir())


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "is read-only"), (errno.EACCES, "no permission to write in"),
                                          (errno.EPERM, "no permission to write in")])
def test_a_read_only_or_forbidden_folder_is_named(tmp_path, monkeypatch, code, reason):
    def refused(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(Path(dir) / ".x.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'out.json'}: ") + ".*" + re.escape(reason)):
        write_json_atomic(tmp_path / "out.json", {"a": 1})
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'out'}: ") + ".*" + re.escape(reason)):
        with staged_output_dir(tmp_path / "out"):
            pytest.fail("staged_output_dir yielded a folder it could not create")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "is read-only"), (errno.EACCES, "no permission to write in")])
def test_a_failed_final_rename_leaves_the_previous_output_and_no_temporary_file(tmp_path, monkeypatch, code, reason):
    write_json_atomic(tmp_path / "out.json", {"old": 1})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "kept").write_text("previous output")
    real_replace = os.replace

    def refused(src, dst):
        if Path(dst).name in ("out.json", "out") and ".tmp" in Path(src).name:
            raise OSError(code, os.strerror(code), str(src), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'out.json'}: ") + ".*" + re.escape(reason)):
        write_json_atomic(tmp_path / "out.json", {"new": 1})
    with pytest.raises(OSError, match=re.escape(f"cannot write {tmp_path / 'out'}: ") + ".*" + re.escape(reason)):
        with staged_output_dir(tmp_path / "out") as tmp:
            (tmp / "new").write_text("new output")
    assert json.loads((tmp_path / "out.json").read_text()) == {"old": 1}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["kept"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.json"]


# A run whose unwinding after SIGTERM never ends (it swallows the SystemExit), so the watchdog has to end it.
STUCK_RUN = """import signal, sys, time
from pathlib import Path
from common import cli
from common.datadir import staging_dir
cli.EXIT_GRACE_SECONDS = 0.5
cli.quiet_interrupts()
with staging_dir(Path(sys.argv[1])) as tmp:
    (tmp / "X_train.npy").write_bytes(b"half")
    while True:
        try:
            print(tmp, flush=True)
            time.sleep(60)
        except SystemExit:
            pass
"""


@pytest.mark.posix_signals
def test_a_run_ended_by_the_signal_watchdog_leaves_no_staging_folder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STUCK_RUN, str(tmp_path / "out")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staging = Path(proc.stdout.readline().strip())
    assert staging.is_dir() and staging.parent == tmp_path
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []
