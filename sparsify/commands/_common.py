"""Helpers shared by the subcommands: loading user files safely, writing outputs."""
from __future__ import annotations

import json
import os

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


def load_points(path, name: str = "--data", input_shape=None) -> np.ndarray:
    """Read a float array of points from a ``.npy`` file (memory-mapped, never unpickled).

    The header is checked against the file's size before anything is mapped
    (:func:`sparsify.io._npyfile.read_npy`). With ``input_shape`` (the model's
    shape of one point, e.g. ``(3, 32, 32)`` for NCHW images) the array must have
    shape ``(n_points, *input_shape)``; without it, any shape of rank >= 2. Only
    the header is read here: the pipeline streams the points block by block.
    """
    from ..io._npyfile import read_npy

    want = "(n_points, n_in)" if input_shape is None or len(input_shape) == 1 else \
        "(n_points, " + ", ".join(map(str, input_shape)) + ") (NCHW)"
    if str(path).endswith(".npz"):
        raise ValueError(f"{name}: expected a .npy array of shape {want}, got an .npz archive "
                         f"{str(path)!r}; save the points with np.save('S.npy', X).")
    arr = read_npy(path, name)
    if input_shape is not None and len(input_shape) == 1:
        if arr.ndim != 2:  # the feature count is checked where the points are used
            raise ValueError(f"{name}: expected an array of shape {want}, got shape {arr.shape} "
                             f"from {str(path)!r}.")
    elif input_shape is None:
        if arr.ndim < 2:
            raise ValueError(f"{name}: expected an array of shape {want}, got shape {arr.shape} "
                             f"from {str(path)!r}.")
    elif arr.ndim != 1 + len(input_shape) or tuple(arr.shape[1:]) != tuple(input_shape):
        hint = ""
        if arr.ndim == 2 and len(input_shape) > 1 and arr.shape[1] == int(np.prod(input_shape)):
            hint = f"; reshape the points with X.reshape(-1, {', '.join(map(str, input_shape))}) before saving"
        raise ValueError(f"{name}: the model takes points of shape {tuple(input_shape)}, so expected an array of "
                         f"shape {want}, got shape {arr.shape} from {str(path)!r}{hint}.")
    return arr


def check_outputs(*targets, inputs=()) -> None:
    """Refuse unwritable output paths before any long computation.

    ``targets`` and ``inputs`` are ``(path, flag)`` pairs, ``path`` None for a file
    not asked for. Two outputs naming one file, an output naming one of ``inputs``,
    and a target that is not a regular file or a new path in an existing directory
    are refused with a ValueError naming the flags.
    """
    from ..io._atomic import check_target

    def same(a, b) -> bool:
        return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))

    seen = []
    for path, flag in targets:
        if path is None:
            continue
        for other, other_flag in seen:
            if same(path, other):
                raise ValueError(f"{other_flag} and {flag} name the same file {str(path)!r}; give each output "
                                 "its own path.")
        for in_path, in_flag in inputs:
            if in_path is not None and same(path, in_path):
                raise ValueError(f"{flag}: {str(path)!r} is the {in_flag} file; writing it would overwrite the "
                                 "input, choose another path.")
        seen.append((path, flag))
    for path, flag in seen:
        check_target(path, flag)


def json_writer(obj):
    """A ``write(fileobj)`` callable for :func:`sparsify.io.atomic_write_many` (JSON, no NaN)."""
    data = json.dumps(obj, indent=2, allow_nan=False).encode() + b"\n"
    return lambda fh: fh.write(data)

