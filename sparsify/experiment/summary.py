"""Summaries of finished rows: mean accuracy per cell, commensurate prune ratios, text tables.

Functions of the rows alone (lists of dicts as :func:`~sparsify.experiment.read_results_csv`
returns them), so they summarise a finished run, a resumed one or a hand-made table alike.
"""
from __future__ import annotations

import math

import numpy as np

from .refit import all_methods

__all__ = [
    "TOLERANCES",
    "accuracy_table",
    "commensurate_prune_ratios",
    "dense_accuracy",
    "format_layers",
    "format_summary",
]

#: tolerances (fractions of accuracy, i.e. 0.5, 1 and 2 percentage points) of the commensurate prune ratio.
TOLERANCES = (0.005, 0.01, 0.02)


def _groups(rows):
    out: dict = {}
    for r in rows:
        out.setdefault((r["mode"], r["method"], float(r["keep"])), []).append(float(r["test_accuracy"]))
    return out


def accuracy_table(rows) -> dict:
    """``{(mode, method, keep): (mean, std, n)}`` of test accuracy over seeds (population std)."""
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in _groups(rows).items()}


def dense_accuracy(rows) -> float:
    """Mean test accuracy of the unpruned network (rows of method ``dense``), NaN if none."""
    acc = {}
    for r in rows:
        if r["method"] == "dense":
            acc[int(r["seed"])] = float(r["test_accuracy"])
    return float(np.mean(list(acc.values()))) if acc else float("nan")


def commensurate_prune_ratios(rows, tolerances=TOLERANCES) -> dict:
    """Largest prune ratio ``1 - keep`` whose mean accuracy is within a tolerance of dense.

    For every ``(mode, method)`` (dense excluded) and every tolerance t (a
    fraction: 0.005 = 0.5 percentage points) the result is the largest
    ``1 - keep`` over the grid with ``mean acc(keep) >= mean acc(dense) - t``,
    or None when no kept fraction qualifies. The dense mean is taken over the
    ``dense`` rows (one per seed).
    """
    ref = dense_accuracy(rows)
    table = accuracy_table(rows)
    out: dict = {}
    for (mode, method, keep), (mean, _, _) in table.items():
        if method == "dense":
            continue
        entry = out.setdefault((mode, method), {t: None for t in tolerances})
        for t in tolerances:
            if mean >= ref - t - 1e-12:
                ratio = 1.0 - keep
                if entry[t] is None or ratio > entry[t]:
                    entry[t] = ratio
    return out


def _pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def format_summary(rows, mode: str | None = None, tolerances=TOLERANCES) -> str:
    """Plain-text tables: accuracy (mean ± std, %) per method and keep; commensurate prune ratios."""
    table = accuracy_table(rows)
    modes = [mode] if mode else sorted({r["mode"] for r in rows}, key=lambda m: (m == "lottery", m))
    ref = dense_accuracy(rows)
    ratios = commensurate_prune_ratios(rows, tolerances)
    blocks = []
    for md in modes:
        methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["mode"] == md) if m != "dense"]
        keeps = sorted({k for (m_, _, k) in table if m_ == md and k < 1.0}, reverse=True)
        if not methods:
            continue
        head = ["method"] + [f"keep {k:.3g}" for k in keeps] + [f"PR@{100 * t:g}pp" for t in tolerances]
        body = []
        for method in methods:
            cells = []
            for k in keeps:
                v = table.get((md, method, k))
                cells.append("-" if v is None else f"{100 * v[0]:.1f}±{100 * v[1]:.1f}")
            pr = ratios.get((md, method), {})
            cells += [_pct(pr.get(t)) for t in tolerances]
            body.append([method] + cells)
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = [f"mode {md}: test accuracy % (mean±std over seeds); dense {100 * ref:.2f}%; "
                 "PR@t = largest prune ratio % with mean accuracy within t of dense"]
        lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
        lines.append("  ".join("-" * w for w in widths))
        for b in body:
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_layers(rows, mode: str, seed: int | None = None, keeps=None) -> str:
    """Kept weights per layer (and sampled sides) of every method at every keep (or ``keeps``), one seed."""
    sel = [r for r in rows if r["mode"] == mode and r["method"] != "dense"
           and (keeps is None or any(abs(r["keep"] - k) < 1e-9 for k in keeps))]
    if not sel:
        return ""
    seed = min(int(r["seed"]) for r in sel) if seed is None else seed
    order = {m: i for i, m in enumerate(all_methods())}
    sel = sorted((r for r in sel if int(r["seed"]) == seed), key=lambda r: (-r["keep"], order.get(r["method"], 999)))
    totals = sel[0]["total_per_layer"]
    head = ["keep", "method"] + [f"layer {i} (of {t})" for i, t in enumerate(totals)] + ["sampled sides"]
    body = [[f"{r['keep']:.3g}", r["method"]] + [str(k) for k in r["kept_per_layer"]] + [str(r["sampled_sides"])]
            for r in sel]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = [f"kept weights per layer right after pruning (mode {mode}, seed {seed})",
             "  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
