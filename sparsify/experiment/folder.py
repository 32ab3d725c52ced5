"""The run's folder: may it be written, does it hold this run, are its cached networks this run's.

Everything here is checked before the first file of a run is written: a
folder that cannot be written, a ``config.json`` that is not this run's (or
not a JSON object), a ``results.csv`` or ``networks`` of the wrong kind are
refused with a ValueError that names the path and the fix, and nothing is
written. A cached network whose shape or activations do not fit the run is
reported as a stale cache file to delete, not as bad input to the network.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..io import atomic_write, load

__all__ = ["load_cached_network", "prepare_out"]


def _check_writable(out: Path) -> list[Path]:
    """Refuse an ``out`` that cannot be created or written; return the folders that would be created."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} exists and is not a folder; choose another --out.")
    missing = []
    probe = out.absolute()
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"out: cannot create {str(out)!r}: {str(probe)!r} is a file, not a folder; "
                         "choose another --out.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"out: {str(probe)!r} is not writable (permission denied or a read-only file "
                         f"system), so {str(out)!r} cannot hold the run; choose a folder you can write to "
                         "with --out.")
    return missing[::-1]


def prepare_out(out, config_dict: dict) -> None:
    """Check ``out`` for a run with settings ``config_dict``; create it and write ``config.json`` if new.

    An existing ``config.json`` must equal ``config_dict`` (the run is resumed);
    a folder with ``results.csv`` but no ``config.json`` is refused.
    """
    out = Path(out)
    created = _check_writable(out)
    cfg_path, csv_path, nets = out / "config.json", out / "results.csv", out / "networks"
    for path, kind, ok in ((cfg_path, "a file", Path.is_file), (csv_path, "a file", Path.is_file),
                           (nets, "a folder", Path.is_dir)):
        if path.exists() and not ok(path):
            raise ValueError(f"out: {str(path)!r} should be {kind} but is not; move it away or choose a new "
                             "--out.")
    mine = json.loads(json.dumps(config_dict))
    if cfg_path.exists():
        try:
            theirs = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"out: {str(cfg_path)!r} is unreadable ({exc}); choose a new --out.") from None
        if not isinstance(theirs, dict):
            raise ValueError(f"out: {str(cfg_path)!r} holds a JSON {type(theirs).__name__}, not an object of "
                             "settings, so it is not a run's config.json; choose a new --out.")
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise ValueError(
                f"out: {str(out)!r} holds a run with a different configuration (differs in {differ}); "
                "resume it with the same settings or choose a new --out."
            )
        return
    if csv_path.exists():
        raise ValueError(f"out: {str(out)!r} has results.csv but no config.json; choose a new --out.")
    text = json.dumps(mine, indent=2) + "\n"
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(cfg_path, lambda fh: fh.write(text.encode("utf-8")))
    except OSError as exc:
        for folder in reversed(created):  # leave nothing behind
            try:
                folder.rmdir()
            except OSError:
                pass
        raise ValueError(f"out: could not write {str(cfg_path)!r} ({exc}); choose a folder you can write to "
                         "with --out.") from None


def load_cached_network(path, widths: list[int], activation: str):
    """Load a network the run saved in ``networks/``, refusing one that does not fit the run.

    ``widths`` are the run's layer widths (input first) and ``activation`` its
    hidden activation; the output layer is the identity (logits).
    """
    path = Path(path)
    fix = f"delete it (rm {str(path)!r}) and run again to rebuild it"
    try:
        net = load(path)
    except ValueError as exc:
        raise ValueError(f"out: cached network {str(path)!r} is unreadable ({exc}); {fix}.") from None
    shapes = [tuple(w.shape) for w in net.weights]
    want = [(n_out, n_in) for n_in, n_out in zip(widths[:-1], widths[1:])]
    acts = [activation] * (len(widths) - 2) + ["identity"]
    if shapes != want or net.activations != acts:
        raise ValueError(
            f"out: cached network {str(path)!r} is stale or from another run: it has weight shapes {shapes} "
            f"and activations {net.activations}, this run needs {want} and {acts}; {fix}."
        )
    return net
