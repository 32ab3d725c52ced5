"""All-or-nothing file writes shared by every output of the package.

A target is written to a temporary file beside it and renamed into place only
when every write of a group succeeded, so a failure (an exception, a full disk,
Ctrl-C) never leaves a partial file behind.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_many"]


def atomic_write(path, write, name: str = "out") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path`` and rename it
    into place, so a failure never leaves a partial file at ``path``."""
    return atomic_write_many([(path, write, name)])[0]


def atomic_write_many(items) -> list[Path]:
    """Write several files all-or-nothing: ``items`` holds ``(path, write, name)``.

    Every file is first written to a temporary file beside its target; only when
    all writes succeeded are they renamed into place. ``name`` (e.g. "--json")
    is used in the error raised when a target directory does not exist.
    """
    items = [(Path(path), write, name) for path, write, name in items]
    for path, _, name in items:
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise ValueError(f"{name}: directory {str(directory)!r} does not exist; create it first.")
    temps: list[str] = []
    try:
        for path, write, _ in items:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
        for (path, _, _), tmp in zip(items, temps):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise
    return [path for path, _, _ in items]
