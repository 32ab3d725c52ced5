"""Generalization–stability: the instability of pruning against the generalization gap.

Following Bartoldson et al. ("The Generalization-Stability Tradeoff in Neural
Network Pruning", NeurIPS 2020), the **instability** of one prune event is the
relative loss of test accuracy it causes,

    instability = (acc_before - acc_after) / acc_before,

and the instability of a pruned network is the mean over the prune events that
made it (one in ``oneshot``/``retrain``; every cascade step so far in
``iterative``; every event of the training run in ``during``). The
**generalization gap** is train accuracy minus test accuracy of the final network.
Their finding is that more unstable pruning goes with a smaller gap and a better
test accuracy; :func:`format_stability` states, per mode, the Spearman rank
correlations with a bootstrap confidence interval.

Mode ``during`` (:func:`prune_schedule`) prunes while the network trains: at the
start of every ``prune_every``-th epoch the kept fraction steps geometrically
from 1 to the target, which the last event reaches; the epochs after it train
with the final mask.
"""
from __future__ import annotations

import math

import numpy as np

from .analyses import _method_order, _num, _table

__all__ = [
    "STABILITY_MODES",
    "bootstrap_spearman",
    "format_stability",
    "instability",
    "prune_schedule",
    "spearman",
    "stability_points",
    "stability_table",
]

#: modes with retraining after pruning, where instability and final accuracy differ.
STABILITY_MODES = ("retrain", "iterative", "during")


def instability(acc_before: float, acc_after: float) -> float:
    """``(acc_before - acc_after) / acc_before``; NaN when ``acc_before`` is not > 0 or a value is NaN."""
    acc_before, acc_after = float(acc_before), float(acc_after)
    if not (acc_before > 0) or not math.isfinite(acc_after):
        return float("nan")
    return (acc_before - acc_after) / acc_before


def prune_schedule(target: float, n_events: int) -> list[float]:
    """Kept fractions of ``n_events`` prune events, geometric from 1 down to ``target`` (reached last)."""
    if n_events < 1:
        raise ValueError(f"n_events: mode 'during' needs at least one prune event, got {n_events}.")
    return [float(target ** ((j + 1) / n_events)) for j in range(n_events)]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, dtype=np.float64)
    sx = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson correlation of mean ranks); NaN with < 3 points or no spread."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3:
        return float("nan")
    rx, ry = _ranks(x) - (x.size + 1) / 2, _ranks(y) - (y.size + 1) / 2
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def bootstrap_spearman(x, y, *, n_boot: int = 1000, level: float = 0.95, rng=0) -> tuple[float, float, float, int]:
    """``(rho, low, high, n)``: Spearman's rho and a percentile bootstrap interval (pairs resampled)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    rho = spearman(x, y)
    if not math.isfinite(rho):
        return rho, float("nan"), float("nan"), int(x.size)
    gen = np.random.default_rng(rng)
    boots = []
    for _ in range(n_boot):
        idx = gen.integers(0, x.size, x.size)
        b = spearman(x[idx], y[idx])
        if math.isfinite(b):
            boots.append(b)
    if not boots:
        return rho, float("nan"), float("nan"), int(x.size)
    low, high = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return rho, float(low), float(high), int(x.size)


def stability_points(rows) -> list[dict]:
    """Pruned rows of :data:`STABILITY_MODES` with a recorded instability and train accuracy."""
    out = []
    for r in rows:
        if r["mode"] not in STABILITY_MODES or r["method"] == "dense":
            continue
        inst, train = r.get("instability", float("nan")), r.get("train_accuracy", float("nan"))
        if not (math.isfinite(inst) and math.isfinite(train)):
            continue
        out.append(dict(mode=r["mode"], method=r["method"], keep=float(r["keep"]), seed=int(r["seed"]),
                        instability=float(inst), gap=float(train - r["test_accuracy"]),
                        test_accuracy=float(r["test_accuracy"])))
    return out


def stability_table(rows) -> dict:
    """``{(mode, method, keep): (instability, gap, test accuracy, n)}``, means over seeds."""
    groups: dict = {}
    for p in stability_points(rows):
        groups.setdefault((p["mode"], p["method"], p["keep"]), []).append(p)
    return {k: (float(np.mean([p["instability"] for p in v])), float(np.mean([p["gap"] for p in v])),
                float(np.mean([p["test_accuracy"] for p in v])), len(v)) for k, v in groups.items()}


def _rho(points, key: str) -> str:
    rho, low, high, n = bootstrap_spearman([p["instability"] for p in points], [p[key] for p in points])
    if not math.isfinite(rho):
        return f"- (n={n})"
    ci = f" [{_num(low, 2)}, {_num(high, 2)}]" if math.isfinite(low) else ""
    return f"{_num(rho, 2)}{ci} (n={n})"


def format_stability(rows) -> str:
    """Per mode: instability, gap and test accuracy per method and keep; Spearman rho with bootstrap CIs."""
    points = stability_points(rows)
    if not points:
        return ("generalization-stability: no pruned row of mode retrain, iterative or during with both "
                "instability and train_accuracy recorded (results.csv files written before these columns "
                "existed have neither); rerun in a new --out to record them.")
    table = stability_table(rows)
    blocks = []
    for mode in [m for m in STABILITY_MODES if any(p["mode"] == m for p in points)]:
        keys = sorted((k for k in table if k[0] == mode), key=lambda k: (_method_order(k[1]), -k[2]))
        body = [[method, f"{keep:.3g}", f"{100 * table[(mode, method, keep)][0]:.1f}",
                 f"{100 * table[(mode, method, keep)][1]:.1f}", f"{100 * table[(mode, method, keep)][2]:.1f}",
                 str(table[(mode, method, keep)][3])] for (_, method, keep) in keys]
        head = ["method", "keep", "instability %", "gap (train-test) %", "test acc %", "seeds"]
        lines = [f"mode {mode}: instability = mean relative test-accuracy drop of the prune events; means over "
                 "seeds"]
        lines += _table(head, body)
        sel = [p for p in points if p["mode"] == mode]
        lines.append("")
        lines.append("Spearman rho of instability with gap and with test accuracy [95% bootstrap interval] "
                     "(the tradeoff predicts rho(gap) < 0 and rho(test acc) > 0):")
        corr_head = ["cells", "rho(instability, gap)", "rho(instability, test acc)"]
        corr_body = [["all keeps", _rho(sel, "gap"), _rho(sel, "test_accuracy")]]
        for keep in sorted({p["keep"] for p in sel}, reverse=True):
            at = [p for p in sel if p["keep"] == keep]
            corr_body.append([f"keep {keep:.3g}", _rho(at, "gap"), _rho(at, "test_accuracy")])
        lines += _table(corr_head, corr_body)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
