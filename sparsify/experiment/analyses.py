"""Recall distortion of pruned networks, and the statistics the analyses share.

**Relative recall** of class c: ``r_c = recall_c / accuracy`` (1 = the class is
recognised as well as the model does on average). **Intensification slope** of a
pruned network (our definition, see docs/experiment.md, "Recall distortion"):
with ``d_c = r_c(before) - 1`` and ``Δ_c = r_c(after) - r_c(before)`` over the
classes present in the test split,

    alpha = sum_c d_c Δ_c / sum_c d_c**2,

the least-squares slope through the origin of Δ against d. ``alpha > 0``:
pruning made classes below the model's accuracy relatively worse and those above
it relatively better (intensification); ``alpha < 0``: de-intensification;
``alpha = -1``: every class ends at the model's accuracy. "Before" is the dense
network of the same seed, "after" the row's final network. NaN when every class
had the same relative recall before (no spread to intensify) or an accuracy is 0.

The slope divides by the dense network's spread, which is small when the dense
network is good at every class; then it is dominated by a few classes. The
**intensified fraction** (also ours) is bounded and robust to that: the share of
classes with ``d_c != 0`` whose relative recall moved away from 1 on their own
side (``d_c Δ_c > 0``), a class whose relative recall did not change counting
one half. 0.5 means no systematic direction, 1 every class intensified, 0 every
class evened out.

Everything here is a function of finished rows (as
:func:`~sparsify.experiment.read_results_csv` returns them), so ``sparsify
report`` re-renders the tables from ``results.csv`` alone.
"""
from __future__ import annotations

import math

import numpy as np

from .config import METHODS

__all__ = [
    "accuracy_from_confusion",
    "format_recall",
    "intensification_slope",
    "intensified_fraction",
    "recall_from_confusion",
    "recall_points",
    "recall_table",
    "relative_recall",
    "t_interval",
]

#: modes whose rows the recall analysis covers (a lottery ticket is not a pruned copy of the dense network).
RECALL_MODES = ("oneshot", "retrain", "iterative", "during")


# --- definitions ---------------------------------------------------------------------------
def recall_from_confusion(confusion) -> np.ndarray:
    """Per-class recall from a confusion matrix (rows: true class, columns: predicted); NaN for an empty row."""
    C = np.asarray(confusion, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"confusion: expected a square matrix (true x predicted), got shape {C.shape}.")
    totals = C.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(C) / totals, np.nan)


def accuracy_from_confusion(confusion) -> float:
    """Fraction of points on the diagonal of a confusion matrix."""
    C = np.asarray(confusion, dtype=np.float64)
    return float(np.trace(C) / C.sum()) if C.sum() > 0 else float("nan")


def relative_recall(recall, accuracy: float) -> np.ndarray:
    """``recall / accuracy`` per class (NaN where the recall is NaN, all NaN when the accuracy is not > 0)."""
    recall = np.asarray(recall, dtype=np.float64)
    if not (accuracy > 0):
        return np.full(recall.shape, np.nan)
    return recall / float(accuracy)


def intensification_slope(recall_before, accuracy_before: float, recall_after, accuracy_after: float) -> float:
    """The intensification slope ``alpha`` of the module's docstring (NaN when undefined)."""
    before = relative_recall(recall_before, accuracy_before)
    after = relative_recall(recall_after, accuracy_after)
    if before.shape != after.shape:
        raise ValueError(f"recall_after: expected {before.size} classes like recall_before, got {after.size}.")
    ok = np.isfinite(before) & np.isfinite(after)
    d = before[ok] - 1.0
    change = after[ok] - before[ok]
    denom = float(d @ d)
    if not ok.any() or denom <= 1e-24:
        return float("nan")
    return float(d @ change / denom)


def intensified_fraction(recall_before, accuracy_before: float, recall_after, accuracy_after: float) -> float:
    """The intensified fraction of the module's docstring (NaN when no class deviated from 1 before)."""
    before = relative_recall(recall_before, accuracy_before)
    after = relative_recall(recall_after, accuracy_after)
    if before.shape != after.shape:
        raise ValueError(f"recall_after: expected {before.size} classes like recall_before, got {after.size}.")
    ok = np.isfinite(before) & np.isfinite(after) & (np.abs(before - 1.0) > 1e-12)
    if not ok.any():
        return float("nan")
    side = np.sign(before[ok] - 1.0) * np.sign(after[ok] - before[ok])
    return float(np.mean((side + 1.0) / 2.0))


def t_interval(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)``: Student-t confidence interval of the mean of the finite ``values``.

    With one value the interval is NaN (no spread to estimate); with none, all NaN.
    """
    from scipy.stats import t as student_t

    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(v.mean())
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    half = float(student_t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


# --- per-row values -------------------------------------------------------------------------
def _dense_by_seed(rows) -> dict:
    """``{(mode, seed): dense row}``; a row of any mode stands in when the mode has none."""
    out: dict = {}
    for r in rows:
        if r["method"] == "dense":
            out[(r["mode"], int(r["seed"]))] = r
            out.setdefault((None, int(r["seed"])), r)
    return out


def recall_points(rows) -> list[dict]:
    """One entry per pruned row of :data:`RECALL_MODES`: its cell, ``alpha``, and the per-class
    relative recalls before (dense) and after (the row's final network)."""
    dense = _dense_by_seed(rows)
    out = []
    for r in rows:
        if r["mode"] not in RECALL_MODES or r["method"] == "dense" or not r["per_class_recall"]:
            continue
        ref = dense.get((r["mode"], int(r["seed"]))) or dense.get((None, int(r["seed"])))
        if ref is None or len(ref["per_class_recall"]) != len(r["per_class_recall"]):
            continue
        alpha = intensification_slope(ref["per_class_recall"], ref["test_accuracy"], r["per_class_recall"],
                                      r["test_accuracy"])
        fraction = intensified_fraction(ref["per_class_recall"], ref["test_accuracy"], r["per_class_recall"],
                                        r["test_accuracy"])
        out.append(dict(mode=r["mode"], method=r["method"], keep=float(r["keep"]), seed=int(r["seed"]),
                        alpha=alpha, fraction=fraction,
                        accuracy_ratio=float(r["test_accuracy"]) / float(ref["test_accuracy"])
                        if ref["test_accuracy"] > 0 else float("nan"),
                        before=relative_recall(ref["per_class_recall"], ref["test_accuracy"]),
                        after=relative_recall(r["per_class_recall"], r["test_accuracy"])))
    return out


def _method_order(name: str) -> int:
    return METHODS.index(name) if name in METHODS else len(METHODS)


def recall_table(rows, level: float = 0.95, measure: str = "alpha") -> dict:
    """``{(mode, method, keep): (mean, low, high, n)}`` of ``measure`` (``"alpha"``, the slope, or
    ``"fraction"``, the intensified fraction) over seeds (t-interval)."""
    if measure not in ("alpha", "fraction"):
        raise ValueError(f"measure: must be 'alpha' or 'fraction', got {measure!r}.")
    groups: dict = {}
    for p in recall_points(rows):
        groups.setdefault((p["mode"], p["method"], p["keep"]), []).append(p[measure])
    return {k: t_interval(v, level) for k, v in groups.items()}


# --- text ----------------------------------------------------------------------------------
def _num(x, digits: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def _table(head, body) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for b in body:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))))
    return lines


def format_recall(rows, level: float = 0.95) -> str:
    """Tables of the intensification slope and the intensified fraction per mode: mean [t-interval] over
    seeds, per method and keep."""
    if not recall_table(rows, level):
        return ("recall distortion: no pruned row with per-class recall and a dense row of the same seed; "
                "nothing to compare.")
    titles = {"alpha": "intensification slope alpha of relative recall (recall/accuracy), pruned vs dense; "
                       "> 0 intensifies, < 0 evens out",
              "fraction": "intensified fraction of classes (relative recall moved away from 1 on its own "
                          "side); 0.5 = no direction, > 0.5 intensifies"}
    blocks = []
    for mode in RECALL_MODES:
        for measure in ("alpha", "fraction"):
            block = _recall_block(rows, mode, measure, titles[measure], level)
            if block:
                blocks.append(block)
    return "\n\n".join(blocks)


def _recall_block(rows, mode, measure, title, level) -> str:
    table = {k: v for k, v in recall_table(rows, level, measure).items() if k[0] == mode}
    if not table:
        return ""
    if measure == "alpha":
        fmt = _num
    else:  # a share of classes: the interval is clipped to [0, 1]
        def fmt(x):
            return "-" if not math.isfinite(x) else f"{min(1.0, max(0.0, x)):.2f}"
    ratio: dict = {}
    for p in recall_points(rows):
        if p["mode"] == mode:
            ratio.setdefault((p["method"], p["keep"]), []).append(p["accuracy_ratio"])
    methods = sorted({k[1] for k in table}, key=_method_order)
    keeps = sorted({k[2] for k in table}, reverse=True)
    head = ["method"] + [f"keep {k:.3g}" for k in keeps]
    body = []
    for method in methods:
        cells = []
        for k in keeps:
            v = table.get((mode, method, k))
            if v is None:
                cells.append("-")
                continue
            mark = "*" if float(np.nanmean(ratio[(method, k)])) < 0.5 else ""
            if v[3] < 2:
                cells.append(f"{fmt(v[0])} (n={v[3]}){mark}")
            else:
                cells.append(f"{fmt(v[0])} [{fmt(v[1])}, {fmt(v[2])}]{mark}")
        body.append([method] + cells)
    lines = [f"mode {mode}: {title}; mean [{100 * level:g}% t-interval] over seeds"]
    lines += _table(head, body)
    if any(c.endswith("*") for b in body for c in b[1:]):
        lines.append("* mean test accuracy below half the dense network's: the pruned network predicts few "
                     "classes, and relative recall mostly measures which")
    return "\n".join(lines)
