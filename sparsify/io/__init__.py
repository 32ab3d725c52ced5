"""Reading and writing networks: ``load`` and ``save`` dispatch on the file suffix.

``.npz`` is sparsify's self-describing format (:mod:`sparsify.io.npz`); other
formats live in sibling modules, each importing its optional dependency only
when called.

Reading distrusts the file (:mod:`sparsify.io._npyfile`): ``.npy`` headers are
checked against the bytes really stored before anything is allocated, object
arrays are refused, and an ``.npz`` archive may inflate to at most
``MAX_RATIO`` (200) times its size plus ``MIN_ALLOWANCE`` (64 MiB), never
beyond ``MAX_BYTES`` (4 GiB); ``load(path, max_bytes=N)`` replaces these limits
for a trusted large model. Writing (:mod:`sparsify.io._atomic`) is atomic, to a
new path or an existing regular file only, with the permissions a plain
``open()`` would give.
"""
from __future__ import annotations

from ._atomic import atomic_write, atomic_write_many
from ._npyfile import MAX_BYTES, MAX_RATIO, MIN_ALLOWANCE
from .npz import FORMAT_NAME, FORMAT_VERSION, arrays_to_network, load, network_to_arrays, save

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_BYTES",
    "MAX_RATIO",
    "MIN_ALLOWANCE",
    "arrays_to_network",
    "atomic_write",
    "atomic_write_many",
    "load",
    "network_to_arrays",
    "save",
]
