"""Checking SiPP's guarantees numerically (``sparsify verify``), and the network-level bounds.

* :mod:`sparsify.verify.check` — the check loop: :func:`verify` prunes with
  many seeds and compares every side with its claimed bound on S and on a
  held-out T;
* :mod:`sparsify.verify.sweep` — :func:`sweep` measures error and bound against
  kept weights (``--plot``);
* :mod:`sparsify.verify.stats` — Clopper–Pearson and Hoeffding intervals and
  the verdict rule;
* :mod:`sparsify.verify.output` — the text table, the JSON encoding, the plot;
* :mod:`sparsify.verify.propagation` — propagation of per-side bounds to the
  network output (docs/theory.md S12).

docs/theory.md ("Checking the guarantees") explains every number.
"""
from .check import CHECK_RTOL, COUNTING, EPS_MAX, output_error, side_check, verify
from .output import format_table, json_ready, plot_sweep
from .propagation import (LIPSCHITZ, RELATIVE_ERROR_ACTIVATIONS, cancellation, layer_tolerances, propagate,
                          propagate_forward)
from .stats import VERDICTS, clopper_pearson, hoeffding_interval, pair_verdict, verdict, verdict_words
from .sweep import sweep

__all__ = [
    "CHECK_RTOL",
    "COUNTING",
    "EPS_MAX",
    "LIPSCHITZ",
    "RELATIVE_ERROR_ACTIVATIONS",
    "VERDICTS",
    "cancellation",
    "clopper_pearson",
    "format_table",
    "hoeffding_interval",
    "json_ready",
    "layer_tolerances",
    "output_error",
    "pair_verdict",
    "plot_sweep",
    "propagate",
    "propagate_forward",
    "side_check",
    "sweep",
    "verdict",
    "verdict_words",
    "verify",
]
