"""Reading and writing networks: ``load`` and ``save`` dispatch on the file suffix.

``.npz`` is sparsify's self-describing format (:mod:`sparsify.io.npz`);
``.onnx`` (:mod:`sparsify.io.onnx`) and ``.safetensors``
(:mod:`sparsify.io.safetensors`) are the interchange formats, each importing
its optional dependency only when called. :mod:`sparsify.io.csr` writes pruned
weights as ``scipy.sparse`` CSR arrays.

Reading distrusts the file (:mod:`sparsify.io._npyfile`): ``.npy`` headers are
checked against the bytes really stored before anything is allocated, object
arrays are refused, and an ``.npz`` archive may inflate to at most
``MAX_RATIO`` (200) times its size plus ``MIN_ALLOWANCE`` (64 MiB), never
beyond ``MAX_BYTES`` (4 GiB); ``load(path, max_bytes=N)`` replaces these limits
for a trusted large model (for ``.onnx`` and ``.safetensors``, whose bytes are
not compressed, it caps the file size). Writing (:mod:`sparsify.io._atomic`) is
atomic, to a new path or an existing regular file only, with the permissions a
plain ``open()`` would give.
"""
from __future__ import annotations

import importlib
import os
import stat
from pathlib import Path

from ._atomic import atomic_write, atomic_write_many
from ._npyfile import MAX_BYTES, MAX_RATIO, MIN_ALLOWANCE
from .npz import FORMAT_NAME, FORMAT_VERSION, _check_activation_names, arrays_to_network, network_to_arrays

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_BYTES",
    "MAX_RATIO",
    "MIN_ALLOWANCE",
    "SUFFIXES",
    "arrays_to_network",
    "atomic_write",
    "atomic_write_many",
    "load",
    "network_to_arrays",
    "save",
    "writer",
]

#: file suffix -> module of this package that reads and writes it
SUFFIXES = {".npz": "npz", ".onnx": "onnx", ".safetensors": "safetensors"}


def _format_module(path, name: str):
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise TypeError(f"{name}: expected a file path (str or pathlib.Path), got {type(path).__name__}.")
    if not os.fspath(path):
        raise ValueError(f"{name}: the file name is empty; give a path such as 'model.npz'.")
    suffix = Path(path).suffix.lower()
    module = SUFFIXES.get(suffix)
    if module is None:
        if _not_a_plain_file(path):
            module = "npz"  # a directory, FIFO, device or link loop: its checks name what the path is
        else:
            raise ValueError(
                f"{name}: cannot tell the format of {str(path)!r} from its suffix {suffix or '(none)'!r}; "
                f"supported suffixes are {', '.join(SUFFIXES)}."
            )
    return importlib.import_module(f"{__name__}.{module}")


def _not_a_plain_file(path) -> bool:
    """True when ``path`` exists as something other than a regular file, or cannot be looked at."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    except OSError:
        return True


def load(path, *, activations=None, max_bytes=None):
    """Read a network from ``path``; the suffix picks the format.

    ``.npz`` (sparsify's own format, plain ``W0, b0, ...`` arrays or a CSR
    archive of :func:`sparsify.io.csr.save_csr`), ``.onnx`` (a graph of
    Gemm/MatMul/Conv/... nodes, see :mod:`sparsify.io.onnx`) or ``.safetensors`` (PyTorch ``state_dict``
    names, see :mod:`sparsify.io.safetensors`). ``activations`` names one
    activation per layer where the file does not say it (plain exports).
    ``max_bytes`` bounds the memory a file may ask for (None: each format's
    default limit).
    """
    module = _format_module(path, "model")
    activations = _check_activation_names(activations, repr(str(path)))  # one rule for every format
    options = {} if max_bytes is None else {"max_bytes": max_bytes}
    if module.__name__.endswith(".npz") and _is_csr_archive(path):
        from .csr import load_csr

        if activations is not None:
            raise ValueError(f"activations: {str(path)!r} is a CSR archive that records its activations; "
                             "omit activations=.")
        return load_csr(path, **options)
    return module.load(path, activations=activations, **options)


def _is_csr_archive(path) -> bool:
    """Whether an ``.npz`` file is a CSR archive of :mod:`sparsify.io.csr` (False when unreadable)."""
    import zipfile

    import numpy as np

    try:
        with zipfile.ZipFile(path) as zf, zf.open("format.npy") as fh:
            fmt = np.lib.format.read_array(fh, allow_pickle=False)
        return fmt.shape == () and fmt.dtype.kind == "U" and str(fmt) == "sparsify-csr"
    except Exception:
        return False


def save(net, path):
    """Write ``net`` to ``path`` atomically; the suffix (``.npz``, ``.onnx``,
    ``.safetensors``) picks the format. Returns the path written."""
    return _format_module(path, "path").save(net, path)


def writer(net, path, name: str = "out"):
    """A ``write(fileobj)`` callable that writes ``net`` in the format of ``path``'s suffix,
    for :func:`atomic_write_many` (several outputs, all or nothing). The bytes are built
    here, so a network the format cannot hold is refused before anything is written.
    With ``net=None`` only the suffix is checked (None is returned)."""
    module = _format_module(path, name)
    if net is None:
        return None
    return module.writer(net)
