"""All-or-nothing file writes shared by every output of the package.

A target is written to a temporary file beside it and renamed into place only
when every write of a group succeeded, so a failure (an exception, a full disk,
Ctrl-C) never leaves a partial file behind.

A target must be a new path or an existing regular file: a directory, a FIFO,
a device node or a socket is refused before anything is written (renaming a
regular file over a FIFO or a device would silently replace it). The new file
gets the permissions a plain ``open()`` would give it (``0o666 & ~umask``), or
keeps those of the file it replaces. Operating-system failures (permission
denied, read-only file system, disk full) are re-raised as the same ``OSError``
subclass with a one-line message naming the target and the fix.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from ._npyfile import check_path, describe_os_error

__all__ = ["atomic_write", "atomic_write_many", "check_target"]


def atomic_write(path, write, name: str = "out") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path`` and rename it
    into place, so a failure never leaves a partial file at ``path``."""
    return atomic_write_many([(path, write, name)])[0]


def _umask() -> int:
    """The process's umask: read from /proc where it can be (no change even for an
    instant), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_target(path, name: str = "out") -> int:
    """Check that ``path`` may be written and return the mode the file will get.

    ``path`` must name a new file in an existing directory or an existing
    regular file; raises ValueError (TypeError for a non-path) otherwise.
    """
    path = check_path(path, name)
    p = repr(str(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ValueError(describe_os_error(exc, path, name, reading=False)) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{name}: {p} is a directory; give a file name inside it, e.g. "
                             f"{str(path / 'model.npz')!r}.")
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                    "a device node" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise ValueError(f"{name}: {p} is {kind}; only a regular file or a new path can be written "
                             "(it would be replaced, not written to); give a file name.")
        return stat.S_IMODE(st.st_mode)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"{name}: directory {str(directory)!r} does not exist; create it first.")
    return 0o666 & ~_umask()


def atomic_write_many(items) -> list[Path]:
    """Write several files all-or-nothing: ``items`` holds ``(path, write, name)``.

    Every target is checked first (:func:`check_target`); every file is then
    written to a temporary file beside its target; only when all writes
    succeeded are they renamed into place. ``name`` (e.g. "--json") names the
    target in error messages.
    """
    items = [(check_path(path, name), write, name) for path, write, name in items]
    modes = [check_target(path, name) for path, _, name in items]
    temps: list[str] = []
    current = None
    try:
        for (path, write, name), mode in zip(items, modes):
            current = (path, name)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), mode)
                write(fh)
        for (path, _, name), tmp in zip(items, temps):
            current = (path, name)
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError) and exc.errno is not None and current is not None:
            clear = type(exc)(describe_os_error(exc, current[0], current[1], reading=False))
            clear.errno = exc.errno  # the message alone, with the errno kept for callers
            raise clear from None
        raise
    return [path for path, _, _ in items]
