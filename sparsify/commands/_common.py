"""Helpers shared by the subcommands: loading user files safely, writing outputs."""
from __future__ import annotations

import json

import numpy as np


def add_model_args(p) -> None:
    p.add_argument("model", metavar="MODEL", help="network as .npz (a sparsify file, or W0,b0,W1,b1,... arrays)")
    p.add_argument("--activations", metavar="A,B,...",
                   help="activation per layer for a plain W0,b0,... export, e.g. relu,relu,identity")
    p.add_argument("--max-bytes", type=int, metavar="N", default=None,
                   help="largest uncompressed size of MODEL to accept, in bytes (default: 200 x its file "
                        "size + 64 MiB, at most 4 GiB); raise it for a trusted large model")


def load_model(args):
    from ..io import load

    acts = None
    if getattr(args, "activations", None):
        acts = [a.strip() for a in args.activations.split(",") if a.strip()]
    return load(args.model, activations=acts, max_bytes=getattr(args, "max_bytes", None))


def load_points(path, name: str = "--data") -> np.ndarray:
    """Read a 2-D float array from a ``.npy`` file (memory-mapped, never unpickled).

    The header is checked against the file's size before anything is mapped
    (:func:`sparsify.io._npyfile.read_npy`).
    """
    from ..io._npyfile import read_npy

    if str(path).endswith(".npz"):
        raise ValueError(f"{name}: expected a .npy array of shape (n_points, n_in), got an .npz archive "
                         f"{str(path)!r}; save the points with np.save('S.npy', X).")
    arr = read_npy(path, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an array of shape (n_points, n_in), got shape {arr.shape} "
                         f"from {str(path)!r}.")
    return np.asarray(arr)


def check_outputs(*targets) -> None:
    """Refuse unwritable output paths before any long computation: ``targets`` are
    ``(path, flag)`` pairs, ``path`` None for an output not asked for."""
    from ..io._atomic import check_target

    for path, flag in targets:
        if path is not None:
            check_target(path, flag)


def json_writer(obj):
    """A ``write(fileobj)`` callable for :func:`sparsify.io.atomic_write_many` (JSON, no NaN)."""
    data = json.dumps(obj, indent=2, allow_nan=False).encode() + b"\n"
    return lambda fh: fh.write(data)

