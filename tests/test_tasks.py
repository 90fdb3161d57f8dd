"""tasks.py, the Makefile's targets for machines without make, and the portable test mode (tests/portable) that
takes the Linux-only facilities away from a whole process tree."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tasks

ROOT = Path(__file__).resolve().parents[1]
PORTABLE_ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "portable")}


@pytest.mark.parametrize("earlier_run", ["baseline_ckpt", "pdd_ckpt"])
def test_demo_refuses_an_earlier_run_before_installing_anything(earlier_run: str, tmp_path: Path) -> None:
    (tmp_path / earlier_run).mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "demo"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr == (f"error: demo: {earlier_run}/ holds an earlier run, which training will not replace; run "
                           "make clean or python tasks.py clean first (it deletes results, baseline_ckpt, pdd_ckpt "
                           "and the generated raw_data)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [earlier_run]


def test_a_task_outside_the_project_folder_names_the_fix(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "test"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 2
    assert done.stderr == f"error: no requirements-dev.txt in {tmp_path}: run tasks.py from the project folder\n"
    assert list(tmp_path.iterdir()) == []


def test_the_venv_is_reinstalled_when_a_requirements_file_is_newer(tmp_path: Path) -> None:
    requirements = [tmp_path / "requirements.txt", tmp_path / "requirements-dev.txt"]
    for path in requirements:
        path.write_text("numpy\n")
    venv = tmp_path / ".venv"
    assert tasks.needs_install(venv, requirements)
    venv.mkdir()
    (venv / ".installed").touch()
    now = time.time()
    os.utime(venv / ".installed", (now, now))
    for path in requirements:
        os.utime(path, (now - 60, now - 60))
    assert not tasks.needs_install(venv, requirements)
    os.utime(requirements[1], (now + 60, now + 60))
    assert tasks.needs_install(venv, requirements)


def test_run_all_stops_at_the_first_failure_with_its_exit_code(tmp_path: Path) -> None:
    after = tmp_path / "after"
    code = tasks.run_all([[sys.executable, "-c", "raise SystemExit(3)"],
                          [sys.executable, "-c", f"open({str(after)!r}, 'w')"]])
    assert code == 3
    assert not after.exists()


@pytest.mark.linux_only
def test_a_step_ended_by_a_signal_exits_with_128_plus_the_signal() -> None:
    assert tasks.run_all([[sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]]) == 137


PORTABLE_PROBE = """
import multiprocessing, os, signal, subprocess, sys
try:
    import fcntl
    print("fcntl imported")
except ImportError as e:
    print(type(e).__name__, e.name)
print(hasattr(os, "fork"), hasattr(signal, "pthread_sigmask"), multiprocessing.get_start_method(),
      os.environ.get("ECG_PORTABLE_TEST"))
"""


def test_the_portable_mode_reaches_every_process_of_the_tree() -> None:
    child = PORTABLE_PROBE + f"subprocess.run([sys.executable, '-c', {PORTABLE_PROBE!r}])\n"
    done = subprocess.run([sys.executable, "-c", child], env=PORTABLE_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ModuleNotFoundError fcntl", "False False spawn 1"] * 2


@pytest.mark.linux_only
def test_the_linux_only_facilities_are_here_outside_the_portable_mode() -> None:
    import fcntl

    assert callable(fcntl.flock) and callable(os.fork) and callable(signal.pthread_sigmask)


def test_the_portable_mode_skips_the_linux_only_tests() -> None:
    probe = "tests/test_tasks.py::test_the_linux_only_facilities_are_here_outside_the_portable_mode"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", probe],
                          cwd=ROOT, env=PORTABLE_ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "linux_only: a Linux-only facility, absent here" in done.stdout
