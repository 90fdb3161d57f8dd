"""The Makefile's targets in plain Python, for machines without `make` (Windows, a bare macOS): run it from the
project folder with any Python 3.10+, e.g. `python tasks.py demo` or `py tasks.py test`.

Tasks: venv (create .venv and install requirements-dev.txt when .venv/.installed is missing or older than a
requirements*.txt), demo, test, test-fast, test-portable (each runs venv first) and clean. Stdlib only, and it
works on the current folder, as make does.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from common.cli import run_cli
from common.errors import ConfigError

PORTABLE = Path("tests", "portable")
DEMO_OUTPUTS = ("baseline_ckpt", "pdd_ckpt")
# The seed README's commands, in order, then the three resumed PDD stages and the comparison.
DEMO_STEPS = (
    ["make_demo_data.py", "--out_dir", "raw_data", "--with_500hz"],
    ["preprocess.py", "--input_dir", "raw_data", "--meta_csv", "labels.csv", "--out_dir", "results/baseline",
     "--length", "5000", "--test_frac", "0.1", "--val_frac", "0.1"],
    ["train_1d_baseline.py", "--data_dir", "results/baseline", "--epochs", "30", "--batch_size", "32",
     "--ckpt_dir", "baseline_ckpt", "--augment"],
    ["compute_difficulty.py"],
    ["pdd_split.py"],
    ["pdd_folder_generator.py"],
    ["train_1d_baseline.py", "--data_dir", "results/pdd/stage1", "--ckpt_dir", "pdd_ckpt/stage1"],
    ["train_1d_baseline.py", "--data_dir", "results/pdd/stage2", "--ckpt_dir", "pdd_ckpt/stage2",
     "--resume", "pdd_ckpt/stage1/last.pt"],
    ["train_1d_baseline.py", "--data_dir", "results/pdd/stage3", "--ckpt_dir", "pdd_ckpt/stage3",
     "--resume", "pdd_ckpt/stage2/last.pt"],
    ["tools/compare_runs.py", "baseline_ckpt", "pdd_ckpt/stage3"],
)
# The portable mode reports every test it breaks: a module importing fcntl fails alone instead of stopping the run.
PYTEST_ARGS = {"test": [], "test-fast": ["-m", "not slow"], "test-portable": ["--continue-on-collection-errors"]}


def venv_python(venv: Path) -> Path:
    """The venv's interpreter: Scripts/python.exe on Windows, bin/python elsewhere."""
    return venv / "Scripts" / "python.exe" if os.name == "nt" else venv / "bin" / "python"


def needs_install(venv: Path, requirements: list[Path]) -> bool:
    """True when venv/.installed is missing or older than a requirements file (the Makefile's rule)."""
    marker = venv / ".installed"
    return not marker.exists() or any(r.stat().st_mtime > marker.stat().st_mtime for r in requirements)


def run(command: list[str | Path], env: dict[str, str] | None = None) -> int:
    """Run a command in the foreground and return its exit code (128 + signal when a signal ended it, as a shell
    says). Ctrl-C reaches the child too, so it is left to end itself (training saves last.pt first) and its code
    is returned, instead of killing it."""
    print(shlex.join(map(str, command)), flush=True)
    proc = subprocess.Popen(list(map(str, command)), env=env)
    while True:
        try:
            code = proc.wait()
            return code if code >= 0 else 128 - code
        except KeyboardInterrupt:
            continue


def run_all(commands: list[list[str | Path]], env: dict[str, str] | None = None) -> int:
    """Run commands in order, stopping at the first that fails; its exit code, else 0."""
    for command in commands:
        code = run(command, env)
        if code:
            return code
    return 0


def ensure_venv(venv: Path) -> int:
    """Create the venv and install requirements-dev.txt into it when needed; 0, or the failing step's code."""
    if not Path("requirements-dev.txt").is_file():
        raise ConfigError(f"no requirements-dev.txt in {Path.cwd()}: run tasks.py from the project folder")
    if not needs_install(venv, sorted(Path().glob("requirements*.txt"))):
        return 0
    py = venv_python(venv)
    code = run_all([[sys.executable, "-m", "venv", venv],
                    [py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                    [py, "-m", "pip", "install", "--quiet", "-r", "requirements-dev.txt"]])
    if code == 0:
        (venv / ".installed").touch()
    return code


def demo(venv: Path) -> int:
    """The whole pipeline on generated demo data; refuses (exit 2) when an earlier demo's runs are still here,
    since training never replaces a finished run and would stop half-way."""
    for name in DEMO_OUTPUTS:
        if Path(name).exists():
            raise ConfigError(f"demo: {name}/ holds an earlier run, which training will not replace; run make clean "
                              "or python tasks.py clean first (it deletes results, baseline_ckpt, pdd_ckpt and the "
                              "generated raw_data)")
    code = ensure_venv(venv)
    return code or run_all([[venv_python(venv), *step] for step in DEMO_STEPS])


def test(venv: Path, task: str, pytest_args: list[str]) -> int:
    """pytest -q with the task's selection; test-portable puts tests/portable first on PYTHONPATH, whose
    sitecustomize.py takes the Linux-only facilities away from every process of the run."""
    env = None
    if task == "test-portable":
        paths = [str(PORTABLE.resolve()), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    code = ensure_venv(venv)
    return code or run([venv_python(venv), "-m", "pytest", "-q", *PYTEST_ARGS[task], *pytest_args], env)


def remove(path: Path) -> None:
    """rm -rf path: a folder with its contents, a file or a link (not what it points to); nothing if absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def clean() -> int:
    """Delete the demo's outputs; raw_data/ only when it holds the generated demo set, since the seed README puts
    a real PTB-XL download there."""
    raw = Path("raw_data")
    if (raw / "demo_dataset.json").is_file():
        remove(raw)
    elif raw.exists():
        print("raw_data/ kept: it is not the generated demo data", flush=True)
    for name in ("results", *DEMO_OUTPUTS):
        remove(Path(name))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the task and run it; the exit code of the first step that failed, else 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path(".venv"), help="virtual environment folder (.venv)")
    parser.add_argument("task", choices=["venv", "demo", "clean", *PYTEST_ARGS])
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="test tasks: more arguments for pytest")
    args = parser.parse_args(argv)
    venv = args.venv.absolute()
    if args.pytest_args and args.task not in PYTEST_ARGS:
        parser.error(f"{args.task} takes no further arguments (got {' '.join(args.pytest_args)})")
    if args.task == "venv":
        return ensure_venv(venv)
    if args.task == "demo":
        return demo(venv)
    if args.task == "clean":
        return clean()
    return test(venv, args.task, args.pytest_args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
