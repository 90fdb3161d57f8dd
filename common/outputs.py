"""Checks of the paths a command is about to write, made before any work: a bad one fails with one line naming the
flag, the path and the reason, and an input, or a file the command did not write itself, is never replaced."""
from __future__ import annotations

import contextlib
import itertools
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def label(flag: str, role: str) -> str:
    """How a message names an output: its flag, then what it is when the flag names it only indirectly."""
    return f"{flag} {role}" if role else flag


def check_writable(path: Path, flag: str, role: str = "", folder: bool = False) -> None:
    """ValueError unless `path` can be written as a file (folder=True: made a folder): it is already the other kind,
    it runs through something that is not a folder, or its nearest existing folder refuses a new file (read-only,
    no permission). Nothing is left behind: the probe is an unnamed temporary file."""
    what = label(flag, role)
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{what} {path} is {'a file, not a folder' if folder else 'a folder, not a file'}; "
                         f"choose another {flag}")
    for above in ((path,) if folder else ()) + tuple(path.parents):
        if above.is_dir():
            break
        if above.exists() or above.is_symlink():
            raise ValueError(f"{what} {path} runs through {above}, which is not a folder; choose another {flag}")
    try:
        with tempfile.TemporaryFile(dir=above):
            pass
    except OSError as e:
        raise ValueError(f"{what} {path} cannot be written: {e.strerror or e} ({above}); choose another {flag}") \
            from None


def same_entry(a: Path, b: Path) -> bool:
    """True when a and b are one directory entry: the one an atomic write to either replaces."""
    return a.name == b.name and a.parent.resolve() == b.parent.resolve()


def refuse_collisions(outputs: list[tuple[str, str, Path]], inputs: list[tuple[str, Path]]) -> None:
    """ValueError naming both paths when an output (flag, role, path) is an input (what, path) or an earlier output."""
    for i, (flag, role, path) in enumerate(outputs):
        for what, other in [(label(f, r), p) for f, r, p in outputs[:i]] + inputs:
            if same_entry(path, other):
                raise ValueError(f"{label(flag, role)} {path} is {what} {other}; choose another {flag}")


def refuse_foreign(path: Path, flag: str, role: str, ours: Callable[[Path], bool], kind: str) -> None:
    """ValueError when `path` exists and `ours` says it is not `kind`, which is all this command ever replaces."""
    if (path.exists() or path.is_symlink()) and not ours(path):
        raise ValueError(f"{label(flag, role)} {path} exists and is not {kind}; move it away or choose another {flag}")


@contextlib.contextmanager
def new_folders(folder: Path) -> Iterator[None]:
    """Make `folder` and the missing folders above it; on an exception, remove those of them still empty, so a failed
    command leaves no empty folder behind."""
    made = list(itertools.takewhile(lambda p: not p.exists(), (folder, *folder.parents)))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in made:
            try:
                path.rmdir()
            except OSError:
                break
        raise
