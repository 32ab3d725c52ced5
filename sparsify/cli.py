"""The ``sparsify`` command line.

Each subcommand lives in ``sparsify/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a
``run(args) -> int`` function. Heavy imports (Numba kernels, matplotlib)
happen inside ``run`` so that ``--help`` starts fast.

Errors caused by the user's input (``ValueError``, ``TypeError``,
``FileNotFoundError``) are printed as one line, without a traceback, and the
command exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ("prune", "demo", "verify", "experiment")


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
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"sparsify {args.command}: error: {_flag_names(str(exc), args)}", file=sys.stderr)
        return 2


#: library parameter names whose command-line flag is spelled differently
_FLAG_FOR = {"rng": "--seed", "X_S": "--data", "X_T": "--test", "activations": "--activations"}


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
