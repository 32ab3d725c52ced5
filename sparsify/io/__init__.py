"""Reading and writing networks: ``load`` and ``save`` dispatch on the file suffix.

``.npz`` is sparsify's self-describing format (:mod:`sparsify.io.npz`); other
formats live in sibling modules, each importing its optional dependency only
when called.
"""
from __future__ import annotations

from ._atomic import atomic_write, atomic_write_many
from .npz import FORMAT_NAME, FORMAT_VERSION, arrays_to_network, load, network_to_arrays, save

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "arrays_to_network",
    "atomic_write",
    "atomic_write_many",
    "load",
    "network_to_arrays",
    "save",
]
