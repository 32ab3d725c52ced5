"""``sparsify report RUN_DIR``: re-render a finished run's tables and plots from its files."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="re-render the tables and plots of a finished experiment run (nothing is recomputed)",
        description=(
            "Read RUN_DIR/config.json and RUN_DIR/results.csv of a 'sparsify experiment' run and write "
            "summary.txt, results.json, the plots and the analyses' tables and plots again, from the "
            "recorded rows alone: no network is trained or pruned. The tables come out byte for byte as "
            "the run wrote them. --analyses adds analyses the run was not configured with."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of a finished experiment (holds config.json and "
                                                      "results.csv)")
    p.add_argument("--analyses", default=None,
                   help="comma-separated analyses from recall,stability (default: the run's own)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiment import render_report

    result = render_report(args.run_dir, analyses=args.analyses, plots=not args.no_plots)
    print(result.summary)
    print("written: " + ", ".join(str(p) for p in [Path(args.run_dir) / "summary.txt",
                                                   Path(args.run_dir) / "results.json", *result.plots]))
    return 0
