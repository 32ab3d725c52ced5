"""The ``sparsify`` command line.

Each subcommand lives in ``sparsify/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
``run(args) -> int`` function. Heavy imports (Numba kernels, matplotlib)
happen inside ``run`` so that ``--help`` starts fast.

Every expected failure is printed as one line naming what was wrong and the
fix, without a traceback, and the command exits with status 2: bad input
(``ValueError``, ``TypeError``), files that cannot be read or written
(any ``OSError``: missing, permission denied, a directory, a read-only file
system, a full disk), damaged archives (``zipfile.BadZipFile``, ``EOFError``),
a refused allocation (``MemoryError``) and a missing optional dependency
(``ImportError``). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import zipfile

SUBCOMMANDS = ("prune", "demo", "verify", "experiment", "convert", "report")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="sparsify",
        description=(
            "Sensitivity-informed provable pruning (SiPP) of neural networks: prune a model with "
            "a small batch of inputs S, keeping each neuron's pre-activation within a provable "
            "relative error."
        ),
        epilog="Run 'sparsify COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"sparsify {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"sparsify.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"sparsify.commands.{name}":
                raise
            continue  # a subcommand not built yet
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("sparsify: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, ImportError) as exc:
        message = _flag_names(str(exc), args)
    except OSError as exc:
        message = _flag_names(_os_message(exc), args)
    except (zipfile.BadZipFile, EOFError) as exc:
        message = f"a file is not a readable archive or array ({exc}); check the input files or re-save them."
    except MemoryError as exc:
        message = (f"not enough memory ({str(exc) or 'an allocation was refused'}); use a smaller model or "
                   "fewer points, or free memory.")
    print(f"sparsify {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check the permissions of the file and its directory",
    errno.EPERM: "check the permissions of the file and its directory",
    errno.EISDIR: "give a file name, not a directory",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "the disk is full; free space or choose another location",
}


def _os_message(exc: OSError) -> str:
    """One line for an operating-system error: sparsify's own message when it wrote
    one, else the file, the system's reason and a hint."""
    if exc.filename is None and exc.strerror is None:
        return str(exc)
    what = f"{exc.filename!r}: " if exc.filename is not None else ""
    hint = _OS_HINTS.get(exc.errno, "check the file")
    return f"cannot access {what}{exc.strerror or exc}; {hint}."


#: library parameter names whose command-line flag is spelled differently
_FLAG_FOR = {"rng": "--seed", "X_S": "--data", "X_T": "--test", "activations": "--activations",
             "max_bytes": "--max-bytes"}


def _flag_names(message: str, args) -> str:
    """Say ``--keep:`` where the library said ``keep:`` (``--first-seed:`` for ``first_seed:``), so CLI
    users see their flags."""
    head, sep, rest = message.partition(":")
    if not sep or " " in head:
        return message
    flag = _FLAG_FOR.get(head)
    if flag is None and head.isidentifier() and hasattr(args, head) and head not in ("model", "command"):
        flag = "--" + head.replace("_", "-")
    return f"{flag}:{rest}" if flag else message


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
