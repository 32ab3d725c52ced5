"""Helpers shared by the subcommands: loading user files safely, writing outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def add_model_args(p) -> None:
    p.add_argument("model", metavar="MODEL", help="network as .npz (a sparsify file, or W0,b0,W1,b1,... arrays)")
    p.add_argument("--activations", metavar="A,B,...",
                   help="activation per layer for a plain W0,b0,... export, e.g. relu,relu,identity")


def load_model(args):
    from ..io import load

    acts = None
    if getattr(args, "activations", None):
        acts = [a.strip() for a in args.activations.split(",") if a.strip()]
    return load(args.model, activations=acts)


def load_points(path, name: str = "--data") -> np.ndarray:
    """Read a 2-D float array from a ``.npy`` file (memory-mapped, never unpickled)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{name}: file {str(path)!r} does not exist.")
    if path.suffix == ".npz":
        raise ValueError(f"{name}: expected a .npy array of shape (n_points, n_in), got an .npz archive "
                         f"{str(path)!r}; save the points with np.save('S.npy', X).")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise ValueError(f"{name}: {str(path)!r} holds pickled objects or is not a .npy array ({exc}); "
                         "save plain numbers with np.save.") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{name}: {str(path)!r} is not a readable .npy file ({exc}).") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: {str(path)!r} is not a single .npy array.")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an array of shape (n_points, n_in), got shape {arr.shape} "
                         f"from {str(path)!r}.")
    return np.asarray(arr)


def json_writer(obj):
    """A ``write(fileobj)`` callable for :func:`sparsify.io.atomic_write_many` (JSON, no NaN)."""
    data = json.dumps(obj, indent=2, allow_nan=False).encode() + b"\n"
    return lambda fh: fh.write(data)

