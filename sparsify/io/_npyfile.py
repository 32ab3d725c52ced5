"""Reading ``.npy`` arrays and ``.npz`` archives of them without trusting the file.

Every array's header (shape and dtype) is read first and checked before any
memory is reserved:

* the bytes the header promises (``prod(shape) * itemsize``) must be present
  in the file (for an ``.npz`` member: in the member's uncompressed size as
  recorded in the zip directory, which also bounds what decompression yields);
* the uncompressed bytes of an ``.npz`` archive must stay within a limit
  relative to the file: at most ``MAX_RATIO`` times the file's size plus
  ``MIN_ALLOWANCE`` bytes, and never more than ``MAX_BYTES`` (a compressed
  archive of a few hundred kB that would inflate to gigabytes is refused).
  ``max_bytes=`` replaces both limits by one absolute cap, for large models;
* object (pickled) dtypes are refused; nothing is ever unpickled.

Errors are ``ValueError`` naming the parameter (``model``, ``--data``), the
file, what is wrong and the fix. ``OSError`` from opening a file is reported
as what it is (missing, unreadable, a directory, a symbolic-link loop).
"""
from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import numpy as np

#: an .npz archive may inflate to MAX_RATIO x its file size plus MIN_ALLOWANCE bytes ...
MAX_RATIO = 200
MIN_ALLOWANCE = 64 * 2**20
#: ... and never beyond MAX_BYTES, unless ``max_bytes=`` says otherwise
MAX_BYTES = 4 * 2**30
#: the longest .npy header read (NumPy's own default limit)
MAX_HEADER = 10_000
_NPY_MAGIC = b"\x93NUMPY"


def check_path(path, name: str) -> Path:
    """``path`` as a Path; a TypeError for anything that is not a file name."""
    if isinstance(path, (str, os.PathLike)) and not isinstance(path, bytes):
        p = os.fspath(path)
        if isinstance(p, str):
            if not p:
                raise ValueError(f"{name}: the file name is empty; give a path such as 'model.npz'.")
            return Path(p)
    raise TypeError(
        f"{name}: expected a file path (str or pathlib.Path), got {type(path).__name__}; "
        "file objects and bytes are not accepted: write the data to a file and pass its name."
    )


def open_for_reading(path: Path, name: str):
    """``open(path, 'rb')`` with each failure reported as what it is (a ValueError)."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise ValueError(describe_os_error(exc, path, name, reading=True)) from None


def describe_os_error(exc: OSError, path, name: str, *, reading: bool) -> str:
    """One line saying what went wrong with ``path`` and how to fix it."""
    p = repr(str(path))
    code = exc.errno
    if code == errno.ENOENT:
        return f"{name}: file {p} does not exist; check the path."
    if code in (errno.EACCES, errno.EPERM):
        verb = "read" if reading else "write"
        return f"{name}: permission denied: cannot {verb} {p}; check its permissions (or those of its directory)."
    if code == errno.ELOOP:
        return f"{name}: {p} is a symbolic link loop (it points back to itself); fix or remove the link."
    if code == errno.EISDIR:
        what = "a .npz/.npy file" if reading else "a file name inside it, e.g. DIR/model.npz"
        return f"{name}: {p} is a directory; give {what}."
    if code == errno.ENOTDIR:
        return f"{name}: a part of {p} is not a directory; check the path."
    if code == errno.EROFS:
        return f"{name}: cannot write {p}: the file system is read-only; choose a writable location."
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"{name}: cannot write {p}: no space left on the device; free space or choose another location."
    return f"{name}: cannot {'read' if reading else 'write'} {p}: {exc.strerror or exc}."


def _read_header(fh, where: str):
    """(shape, fortran_order, dtype, header bytes) of the .npy stream ``fh``."""
    start = fh.read(len(_NPY_MAGIC))
    if start != _NPY_MAGIC:
        raise ValueError(f"{where} is not a .npy array (it does not start with the .npy signature)")
    major_minor = fh.read(2)
    if len(major_minor) != 2:
        raise ValueError(f"{where} is a truncated .npy array")
    major = major_minor[0]
    read = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}.get(major)
    if read is None:
        raise ValueError(f"{where} has unsupported .npy format version {major}")
    try:
        shape, fortran, dtype = read(fh, max_header_size=MAX_HEADER)
    except ValueError as exc:
        if "max_header_size" in str(exc) or "large" in str(exc):
            raise ValueError(f"{where} has an oversized .npy header (over {MAX_HEADER} bytes); "
                             "a plain numeric array never needs one") from None
        raise ValueError(f"{where} has a malformed .npy header ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{where} holds pickled Python objects, which sparsify never loads for safety; "
                         "re-save the arrays as plain numeric arrays")
    return shape, fortran, dtype


def _nbytes(shape, dtype) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * dtype.itemsize


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    with zf.open(info) as fh:
        shape, fortran, dtype = _read_header(fh, where)
        need = _nbytes(shape, dtype)
        header_end = fh.tell()
        if need > info.file_size - header_end:
            raise ValueError(
                f"{where} declares shape {shape} of {dtype} ({need} bytes) but holds only "
                f"{max(info.file_size - header_end, 0)} bytes of data; the file is damaged or forged"
            )
        buf = bytearray(need)
        got = fh.readinto(memoryview(buf)) if need else 0
        while got < need:
            more = fh.readinto(memoryview(buf)[got:])
            if not more:
                raise ValueError(f"{where} is truncated")
            got += more
    arr = np.frombuffer(buf, dtype=dtype) if need else np.empty(0, dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npz(path, name: str = "model", max_bytes: int | None = None,
             max_members: int = 40_000) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive ``path``, checked as the module docstring says."""
    path = check_path(path, name)
    p = repr(str(path))
    with open_for_reading(path, name) as fh:
        size = os.fstat(fh.fileno()).st_size
        magic = fh.read(len(_NPY_MAGIC))
        if magic == _NPY_MAGIC:
            raise ValueError(f"{name}: {p} is a single .npy array, not an .npz archive of named arrays; "
                             "save a model with sparsify.save or np.savez(path, W0=..., b0=..., ...).")
        if not magic.startswith(b"PK"):
            raise ValueError(
                f"{name}: {p} is not an .npz archive (it does not start like a zip file); "
                "save a model with sparsify.save or np.savez(path, W0=..., b0=..., ...)."
            )
        fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
            raise ValueError(f"{name}: {p} is not a readable .npz model file ({exc}).") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise ValueError(f"{name}: {p} holds {len(infos)} entries, more than the {max_members} "
                                 "a model can have; it is not a model file.")
            total = sum(info.file_size for info in infos)
            if max_bytes is None:
                limit = min(MAX_BYTES, MAX_RATIO * size + MIN_ALLOWANCE)
                fix = (f"if you trust the file, raise the limit with load(..., max_bytes={total}) "
                       f"(CLI: --max-bytes {total}); by default it is min({MAX_BYTES}, "
                       f"{MAX_RATIO} x file size + {MIN_ALLOWANCE}) bytes")
            else:
                limit = int(max_bytes)
                fix = f"if you trust the file, raise max_bytes (CLI: --max-bytes) to at least {total}"
            if total > limit:
                raise ValueError(f"{name}: {p} would inflate from {size} to {total} bytes, over the limit of "
                                 f"{limit} bytes; {fix}.")
            arrays: dict[str, np.ndarray] = {}
            for info in infos:
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in arrays:
                    raise ValueError(f"{name}: {p} holds the entry {key!r} twice; the file is damaged.")
                where = f"{name}: entry {key!r} of {p}"
                try:
                    arrays[key] = _read_member(zf, info, where)
                except ValueError as exc:
                    raise ValueError(f"{exc}; re-save the model with sparsify.save or np.savez.") from None
                except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                    raise ValueError(f"{where} cannot be read ({exc}); the file is damaged.") from None
    return arrays


def read_npy(path, name: str = "--data") -> np.ndarray:
    """A ``.npy`` array, memory-mapped read-only, after checking its header against the file size."""
    path = check_path(path, name)
    p = repr(str(path))
    with open_for_reading(path, name) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            shape, fortran, dtype = _read_header(fh, f"{name}: {p}")
        except ValueError as exc:
            raise ValueError(f"{exc}; save plain numbers with np.save('S.npy', X).") from None
        offset = fh.tell()
    need = _nbytes(shape, dtype)
    if need > size - offset:
        raise ValueError(f"{name}: {p} declares shape {shape} of {dtype} ({need} bytes) but holds only "
                         f"{size - offset} bytes of data; the file is truncated or damaged.")
    if need == 0:
        return np.empty(shape, dtype, order="F" if fortran else "C")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
