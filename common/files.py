"""Small file helpers the stages and runners share: a JSON object read with a message naming the fix, a link that
never copies the bytes, and paths stored in one file that name another, readable on any OS."""
from __future__ import annotations

import json
import os
from pathlib import Path


def load_json(path: Path, fix: str, keys: tuple[str, ...] = ()) -> dict:
    """A JSON object holding `keys`; a missing, truncated or foreign file raises naming it and `fix`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {fix}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {fix}") from None
    missing = [key for key in keys if not isinstance(content, dict) or key not in content]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; {fix}")
    return content


def link_file(src: Path, dst: Path) -> str:
    """Hard-link src to dst, else symlink it; never copy the bytes. Returns how it was linked."""
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        os.symlink(src.resolve(), dst)
        return "symlink"


def portable_path(path: Path, base: Path) -> str:
    """`path` as a file in folder `base` stores it: relative to base with / separators, so the pair of folders can
    move together, and between Windows, macOS and Linux; absolute only where no relative path exists (another
    Windows drive)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def stored_path(value: str, base: Path) -> Path:
    """A path that a file in folder `base` stores (portable_path), as a path to open from here; absolute paths that
    older files stored are taken as they are."""
    return Path(os.path.normpath(Path(base) / Path(value.replace("\\", "/"))))
