"""Checking the guarantees of SiPP numerically (``sparsify verify``).

The network is pruned with many independent seeds. For every layer, every
neuron side and every point of the batch S (in-sample) and of a held-out batch
T (out-of-sample) we record whether the side's pre-activation of the pruned
layer is within ``(1 ± eps)`` of the original, where ``eps`` is the bound the
method claims for that side (or one value given by the user). From the counts
we report failure rates with exact Clopper–Pearson intervals and a verdict.

How trials are counted (docs/theory.md, "Checking the guarantees"): one trial
is one seed, i.e. one independently pruned network. A layer *fails* on a seed
if any of its sides fails at any point of the batch. Seeds are independent, so
the number of failing seeds is binomial and the Clopper–Pearson interval is
exact. Sides and points of one pruned network are not independent (they share
the draws and the allocation); their rates are reported as descriptive
numbers only. By the union bound the theory allows a layer to fail on a seed
with probability at most ``min(1, delta * (sampled sides) * (points))``;
deterministic sides contribute nothing since their bound is certain.

Verdicts, at confidence ``c`` (two-sided Clopper–Pearson interval
``[lower, upper]``, observed rate ``k/n``, allowance ``p0``):

* ``"violated"``: ``lower > p0`` — the data show the failure rate exceeds what
  the theory allows;
* ``"holds"``: ``k/n <= p0`` — no failures beyond the allowance (with a tiny
  ``delta``: no failures at all). ``upper`` says how small the failure rate is
  shown to be; ``confirmed`` is True when even ``upper <= p0``, which no number
  of trials can reach for ``p0`` near 1e-16;
* ``"not enough trials"``: otherwise (more failures than allowed, but few
  enough to be chance).

The union-bound allowance is vacuous (``>= 1``) for a testable ``delta`` such
as 0.05 on a real layer, so a second test needs no union bound: per seed, the
fraction of (sampled-or-not side, point) pairs that fail lies in [0, 1], is
i.i.d. over seeds and has mean at most ``delta``; ``pair_verdict`` applies the
same rule to its two-sided Hoeffding interval. ``holds`` in the result means no
in-sample ``verdict`` or ``pair_verdict`` is ``"violated"``.
"""
from __future__ import annotations

import io

import math
from typing import Callable, Sequence

import numpy as np

from . import bounds
from ._validation import check_choice, check_positive
from .network import Network
from .reference import split_inputs

VERDICTS = ("holds", "violated", "not enough trials")

#: slack for rounding when comparing |Z_hat - Z| with eps |Z|, relative to |Z| + |Z_hat|.
CHECK_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}

COUNTING = (
    "one trial = one seed (one independently pruned network); a layer fails on a seed if any of its "
    "sides fails at any point of the batch; allowed_rate = min(1, delta * max sampled sides * points) "
    "by the union bound (deterministic sides never fail in theory); pair_verdict tests the per-seed "
    "fraction of failing (side, point) pairs (i.i.d. over seeds, mean <= delta) with a Hoeffding interval; "
    "side_failure_rate is descriptive only, since sides of one network are dependent"
)


# --- statistics -------------------------------------------------------------------
def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper–Pearson interval for a binomial rate with ``k`` successes in ``n`` trials."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=float(confidence), method="exact")
    return float(ci.low), float(ci.high)


def verdict(k: int, n: int, allowed: float, confidence: float = 0.95) -> dict:
    """Failure statistics and the verdict for ``k`` failures in ``n`` independent trials.

    ``allowed`` is the largest failure probability per trial the theory
    permits. See the module docstring for the rule.
    """
    lower, upper = clopper_pearson(k, n, confidence)
    rate = k / n if n else 0.0
    allowed = float(min(1.0, allowed))
    if lower > allowed:
        v = "violated"
    elif rate <= allowed:
        v = "holds"
    else:
        v = "not enough trials"
    return dict(trials=int(n), failures=int(k), failure_rate=rate, failure_rate_lower=lower,
                failure_rate_upper=upper, allowed_rate=allowed, verdict=v,
                confirmed=bool(upper <= allowed), vacuous=bool(allowed >= 1.0))


def hoeffding_interval(mean: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Hoeffding interval for the mean of ``n`` i.i.d. variables in [0, 1].

    ``mean ± sqrt(ln(2 / (1 - confidence)) / (2 n))``, clipped to [0, 1].
    """
    if n <= 0:
        return 0.0, 1.0
    half = math.sqrt(math.log(2.0 / (1.0 - confidence)) / (2.0 * n))
    return max(0.0, mean - half), min(1.0, mean + half)


# --- measurements -------------------------------------------------------------------
def side_check(A: np.ndarray, W: np.ndarray, W_hat: np.ndarray, eps, rtol: float):
    """Compare each side's pre-activation of ``W_hat`` with that of ``W`` at the rows of ``A``.

    ``A`` must already be sign-split (nonnegative). ``Z± = A @ W±.T`` and the
    pruned ``Z_hat±`` use the entries of ``W_hat`` on the original weight's
    side. A side fails at a point if ``|Z_hat - Z| > eps |Z| + rtol (|Z| + |Z_hat|)``.

    Returns ``(fails, errors, pair_fails)``: ``fails`` (n_out, 2) bool — the side
    fails at some point; ``errors`` (n_out, 2) — the largest relative error
    ``|Z_hat - Z| / |Z|`` over points with ``Z != 0`` (0 if none); ``pair_fails``
    (n_out, 2) — at how many points the side fails.
    """
    A = np.asarray(A, dtype=np.float64)
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), (W.shape[0], 2))
    fails = np.zeros((W.shape[0], 2), bool)
    errors = np.zeros((W.shape[0], 2))
    pair_fails = np.zeros((W.shape[0], 2), np.int64)
    Wd = W.astype(np.float64)
    Whd = W_hat.astype(np.float64)
    for col, side in enumerate((Wd > 0, Wd < 0)):
        Z = np.abs(A @ np.where(side, Wd, 0.0).T)
        Zh = np.abs(A @ np.where(side, Whd, 0.0).T)
        err = np.abs(Zh - Z)
        bad = err > eps[:, col] * Z + rtol * (Z + Zh)
        fails[:, col] = bad.any(axis=0)
        pair_fails[:, col] = bad.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(Z > 0, err / Z, np.where(err > 0, np.inf, 0.0))
        errors[:, col] = rel.max(axis=0) if rel.shape[0] else 0.0
    return fails, errors, pair_fails


def output_error(z: np.ndarray, z_hat: np.ndarray) -> np.ndarray:
    """Per point, ``max_i |z_hat_i - z_i| / |z_i|`` (0 where both are 0, inf where only ``z_i`` is 0)."""
    err = np.abs(np.asarray(z_hat, np.float64) - np.asarray(z, np.float64))
    absz = np.abs(np.asarray(z, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(absz > 0, err / absz, np.where(err > 0, np.inf, 0.0))
    return rel.max(axis=1)


def _output_preactivation(network: Network, X: np.ndarray) -> np.ndarray:
    last = network.layers[-1]
    return last.preactivation(network.trace(X)[-1])


class _SetStats:
    """Accumulates the measurements of one layer on one batch over the seeds."""

    def __init__(self, n_out: int, n_rows: int):
        self.n_rows = n_rows
        self.layer_fail_seeds: list[int] = []
        self.side_fails = 0
        self.side_trials = 0
        self.max_sampled = 0
        self.ratios: list[np.ndarray] = []
        self.errors: list[np.ndarray] = []
        self.pair_fractions: list[float] = []

    def add(self, seed, fails, errors, pair_fails, nonempty, pruned, eps, n_sampled):
        if fails[nonempty].any():
            self.layer_fail_seeds.append(int(seed))
        n_pairs = int(nonempty.sum()) * self.n_rows
        self.pair_fractions.append(pair_fails[nonempty].sum() / n_pairs if n_pairs else 0.0)
        self.side_fails += int(fails[nonempty].sum())
        self.side_trials += int(nonempty.sum())
        self.max_sampled = max(self.max_sampled, int(n_sampled))
        err = errors[pruned]
        self.errors.append(err)
        e = np.broadcast_to(eps, errors.shape)[pruned]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.ratios.append(np.where(err > 0, e / err, np.nan))

    def summary(self, n_seeds: int, delta: float, confidence: float) -> dict:
        # deterministic sides cannot fail in theory; sampled sides fail with prob <= delta per point
        allowed = min(1.0, delta * self.max_sampled * self.n_rows)
        out = verdict(len(self.layer_fail_seeds), n_seeds, allowed, confidence)
        out["delta"] = float(delta)
        out["points"] = int(self.n_rows)
        out["failing_seeds"] = self.layer_fail_seeds[:10]
        out["side_failure_rate"] = self.side_fails / self.side_trials if self.side_trials else 0.0
        # pair level: the fraction of (side, point) pairs that fail is one number in [0, 1] per seed,
        # i.i.d. over seeds, with mean <= delta under the theory (each pair fails w.p. <= delta)
        frac = float(np.mean(self.pair_fractions)) if self.pair_fractions else 0.0
        lo, hi = hoeffding_interval(frac, n_seeds, confidence)
        out["pair_failure_rate"] = frac
        out["pair_failure_rate_lower"] = lo
        out["pair_failure_rate_upper"] = hi
        out["pair_verdict"] = "violated" if lo > delta else ("holds" if frac <= delta else "not enough trials")
        err = np.concatenate(self.errors) if self.errors else np.zeros(0)
        ratio = np.concatenate(self.ratios) if self.ratios else np.zeros(0)
        ratio = ratio[np.isfinite(ratio)]
        out["measured_error_max"] = float(err.max()) if err.size else 0.0
        out["measured_error_median"] = float(np.median(err)) if err.size else 0.0
        out["bound_over_measured"] = float(np.median(ratio)) if ratio.size else None
        out["bound_over_measured_min"] = float(ratio.min()) if ratio.size else None
        return out


def _bound_summary(m: np.ndarray, b: np.ndarray) -> dict:
    finite = np.isfinite(b)
    ok = finite & (m <= b * (1 + 1e-9) + 1e-12)
    both = finite & np.isfinite(m) & (m > 0)
    return dict(
        finite_fraction=float(finite.mean()) if b.size else 0.0,
        holds_fraction=float(ok.sum() / finite.sum()) if finite.any() else None,
        bound_median=float(np.median(b[finite])) if finite.any() else None,
        bound_over_measured=float(np.median(b[both] / m[both])) if both.any() else None,
    )


def _network_summary(measured: list, bounds_by_name: dict) -> dict:
    m = np.concatenate(measured)
    out = dict(points=int(m.size), measured_median=float(np.median(m)) if m.size else 0.0,
               measured_max=float(m.max()) if m.size else 0.0)
    for name, b in bounds_by_name.items():
        out[name] = _bound_summary(m, np.concatenate(b)) if b else None
    return out


def _relative(d: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per point ``max_i d_i / |z_i|`` (0 where both are 0, inf where only ``z_i`` is 0)."""
    absz = np.abs(np.asarray(z, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(absz > 0, d / np.where(absz > 0, absz, 1.0), np.where(d > 0, np.inf, 0.0))
    return rel.max(axis=1)


def _check_points(network: Network, X, name: str) -> np.ndarray:
    X = network.check_input(X, name)
    if X.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty; give at least one point.")
    return X


def verify(network, X_S, X_T, *, keep=0.1, budget=None, method: str = "hybrid", allocation=None,
           seeds: int = 50, first_seed: int = 0, eps=None, delta: float = bounds.DEFAULT_DELTA,
           C: float = bounds.DEFAULT_C, confidence: float = 0.95,
           progress: Callable[[int, int], None] | None = None) -> dict:
    """Prune ``network`` with seeds ``first_seed, ..., first_seed + seeds - 1`` and check the bounds.

    Parameters
    ----------
    network : Network
    X_S : array (n_S, n_in)
        The batch S used for pruning (in-sample checks: no assumption).
    X_T : array (n_T, n_in)
        Held-out points (out-of-sample checks: rest on ``g(x) <= C s``).
    keep, budget, method, allocation, delta, C
        Passed to :func:`sparsify.prune`.
    seeds : int
        Number of independent prunings (trials).
    eps : float, optional
        One tolerance for every side instead of the bound each side claims.
    confidence : float
        Level of the Clopper–Pearson intervals.
    progress : callable(done, total), optional
        Called after each seed.

    Returns
    -------
    dict
        ``{"layers": [...], "network": {...}, "holds": bool, ...}``, JSON-ready;
        each layer entry holds the in-sample statistics at top level and the
        same keys under ``"out_of_sample"`` (docs/theory.md explains each key).
    """
    from .prune import METHODS, prune

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    check_choice(method, "method", METHODS)
    X_S = _check_points(network, X_S, "X_S")
    X_T = _check_points(network, X_T, "X_T")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds: the number of prunings must be an integer >= 1, got {seeds!r}; e.g. seeds=50.")
    if isinstance(first_seed, bool) or not isinstance(first_seed, (int, np.integer)) or first_seed < 0:
        raise ValueError(f"first_seed: must be a non-negative integer, got {first_seed!r}.")
    delta = check_positive(delta, "delta", upper=1.0)
    confidence = check_positive(confidence, "confidence", upper=1.0)
    if eps is not None:
        eps = check_positive(eps, "eps")
    seeds = int(seeds)
    rtol = CHECK_RTOL[network.dtype]

    A_S = [split_inputs(np.asarray(a, np.float64)) for a in network.trace(X_S)]
    A_T = [split_inputs(np.asarray(a, np.float64)) for a in network.trace(X_T)]
    nonempty = [np.stack([(layer.weight > 0).any(1), (layer.weight < 0).any(1)], 1) for layer in network.layers]
    stats = {name: [_SetStats(layer.n_out, A[k].shape[0]) for k, layer in enumerate(network.layers)]
             for name, A in (("S", A_S), ("T", A_T))}

    acts = network.activations
    applicable = all(a in bounds.RELATIVE_ERROR_ACTIVATIONS for a in acts[:-1])
    traces = {"S": network.trace(X_S), "T": network.trace(X_T)}
    z_orig = {name: _output_preactivation(network, X) for name, X in (("S", X_S), ("T", X_T))}
    cancel = {name: [bounds.cancellation(a, layer.weight, layer.bias) for a, layer in zip(tr, network.layers)]
              for name, tr in traces.items()}
    net_measured = {"S": [], "T": []}
    net_bound = {"S": [], "T": []}
    net_forward = {"S": [], "T": []}
    forward_ok = all(a in bounds.LIPSCHITZ for a in acts)
    biases = [layer.bias for layer in network.layers]

    sampled_counts = np.zeros((seeds, len(network.layers)), np.int64)
    eps_all = [[] for _ in network.layers]
    report = None
    for r in range(seeds):
        seed = first_seed + r
        res = prune(network, X_S, keep=keep, budget=budget, method=method, allocation=allocation,
                    rng=seed, delta=delta, C=C)
        report = res.report
        eps_neuron = []
        for k, (layer, tab) in enumerate(zip(network.layers, res.sides)):
            W, W_hat = layer.weight, res.network.layers[k].weight
            claimed = tab.eps if eps is None else np.full(tab.eps.shape, eps)
            pruned = nonempty[k] & ~tab.dead & (tab.kept < tab.nnz)
            n_sampled = int(tab.sampled.sum())
            sampled_counts[r, k] = n_sampled
            eps_all[k].append(np.asarray(tab.eps)[pruned])
            for name, A in (("S", A_S), ("T", A_T)):
                fails, errors, pair_fails = side_check(A[k], W, W_hat, claimed, rtol)
                stats[name][k].add(seed, fails, errors, pair_fails, nonempty[k], pruned, claimed, n_sampled)
            eps_neuron.append(np.max(np.where(nonempty[k], claimed, 0.0), axis=1))
        for name, X in (("S", X_S), ("T", X_T)):
            net_measured[name].append(output_error(z_orig[name], _output_preactivation(res.network, X)))
            if applicable:
                net_bound[name].append(np.asarray(bounds.propagate(eps_neuron, cancel[name], activations=acts)))
            if forward_ok:
                d = bounds.propagate_forward(eps_neuron, network.weights, traces[name], acts, biases)
                net_forward[name].append(_relative(d, z_orig[name]))
        if progress is not None:
            progress(r + 1, seeds)

    layers = []
    for k, layer in enumerate(network.layers):
        row = dict(layer=k, shape=f"{layer.n_out}x{layer.n_in}", activation=layer.activation,
                   sides=int(nonempty[k].sum()), kept=int(report.layers[k]["kept"]), total=int(layer.weight.size),
                   sampled_sides_mean=float(sampled_counts[:, k].mean()),
                   eps_median=float(np.median(np.concatenate(eps_all[k]))) if sum(e.size for e in eps_all[k]) else 0.0)
        row.update(stats["S"][k].summary(seeds, delta, confidence))
        row["out_of_sample"] = stats["T"][k].summary(seeds, delta, confidence)
        layers.append(row)
    net = dict(product_applicable=bool(applicable), forward_applicable=bool(forward_ok),
               quantity="output pre-activation: max over output neurons of |z_hat - z| / |z|, per point and seed")
    for name, key in (("S", "in_sample"), ("T", "out_of_sample")):
        net[key] = _network_summary(net_measured[name], {"product": net_bound[name], "forward": net_forward[name]})
    if not applicable:
        net["product_reason"] = (f"hidden activations {acts[:-1]} include one outside "
                                 f"{sorted(bounds.RELATIVE_ERROR_ACTIVATIONS)}")
    return dict(
        method=method, allocation=report.allocation, keep=keep, budget=budget,
        kept=int(report.achieved), total=int(report.total), seeds=seeds, first_seed=int(first_seed),
        delta=float(delta), C=float(C), eps=eps, confidence=float(confidence),
        n_S=int(X_S.shape[0]), n_T=int(X_T.shape[0]), counting=COUNTING,
        layers=layers, network=net,
        holds=all("violated" not in (row["verdict"], row["pair_verdict"]) for row in layers),
        holds_out_of_sample=all("violated" not in (row["out_of_sample"]["verdict"], row["out_of_sample"]["pair_verdict"])
                                for row in layers),
    )


# --- text ---------------------------------------------------------------------------
def _fmt(x, spec=".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def format_table(result: dict) -> str:
    """The human-readable summary of a :func:`verify` result."""
    r = result
    eps_text = "the bound each side claims" if r["eps"] is None else f"eps = {r['eps']:g} for every side"
    lines = [
        f"verify: method={r['method']} allocation={r['allocation']} kept {r['kept']}/{r['total']} weights, "
        f"{r['seeds']} seeds ({r['first_seed']}..{r['first_seed'] + r['seeds'] - 1}), delta={r['delta']:g}, "
        f"C={r['C']:g}, |S|={r['n_S']}, |T|={r['n_T']}",
        f"checked: each side within (1 ± eps) of the original, eps = {eps_text}; "
        f"one trial = one seed, a layer fails if any side fails at any point; "
        f"CP = {100 * r['confidence']:g}% Clopper-Pearson interval",
    ]
    head = (f"{'layer':>5} {'shape':>8} {'sampled':>7} {'eps med':>7} {'fail/seeds':>10} {'CP upper':>8} "
            f"{'allowed':>8} {'verdict':>17} {'pairs':>8} {'upper':>7} {'pair verdict':>17} {'err max':>7} "
            f"{'bound/err':>9}")
    vacuous = False
    for title, key in (("in-sample (S, no assumption)", None), ("out-of-sample (T, assumes g(x) <= C s)", "out_of_sample")):
        lines += ["", title, head]
        for row in r["layers"]:
            st = row if key is None else row[key]
            vacuous |= st["vacuous"]
            allowed = _fmt(st["allowed_rate"], ".2g") + ("*" if st["vacuous"] else "")
            lines.append(
                f"{row['layer']:>5} {row['shape']:>8} {row['sampled_sides_mean']:>7.1f} {_fmt(row['eps_median']):>7} "
                f"{str(st['failures']) + '/' + str(st['trials']):>10} {_fmt(st['failure_rate_upper'], '.2g'):>8} "
                f"{allowed:>8} {st['verdict']:>17} {_fmt(st['pair_failure_rate'], '.2g'):>8} "
                f"{_fmt(st['pair_failure_rate_upper'], '.2g'):>7} {st['pair_verdict']:>17} "
                f"{_fmt(st['measured_error_max']):>7} {_fmt(st['bound_over_measured']):>9}"
            )
    lines.append("")
    lines.append("sampled: sides sampled per seed (mean); eps med: median claimed bound of pruned sides; "
                 "pairs: fraction of (side, point) pairs failing (allowed: delta); bound/err: median over "
                 "pruned sides of claimed eps / measured max error")
    if vacuous:
        lines.append("* allowance >= 1: the union bound over sides and points is vacuous here; see pair verdict")
    net = r["network"]
    lines.append("")
    lines.append("network (output pre-activation, relative error per point and seed; bounds assume every side "
                 "meets its eps at the pruned network's own inputs):")
    for title, key in (("S", "in_sample"), ("T", "out_of_sample")):
        n = net[key]
        parts = [f"  {title}: measured median {_fmt(n['measured_median'])}, max {_fmt(n['measured_max'])}"]
        for name, label in (("product", "Delta-product bound"), ("forward", "forward bound")):
            b = n[name]
            if b is None:
                parts.append(f"{label}: not applicable")
                continue
            held = "-" if b["holds_fraction"] is None else f"{100 * b['holds_fraction']:.1f}%"
            parts.append(f"{label}: median {_fmt(b['bound_median'])} (finite at {100 * b['finite_fraction']:.0f}% "
                         f"of points, holds at {held}, bound/measured {_fmt(b['bound_over_measured'])})")
        lines.append("; ".join(parts))
    lines.append("")
    lines.append("in-sample guarantees: " + ("hold (no layer violated)" if r["holds"] else "VIOLATED")
                 + "; out-of-sample: " + ("no violation" if r["holds_out_of_sample"] else "violated (the assumption g <= C s fails on T)"))
    return "\n".join(lines)


# --- sweep for the plot -------------------------------------------------------------
def sweep(network, X_S, keeps: Sequence[float], methods: Sequence[str] = ("det", "rand", "hybrid"), *,
          seed: int = 0, delta: float = bounds.DEFAULT_DELTA, C: float = bounds.DEFAULT_C,
          progress: Callable[[int, int], None] | None = None) -> dict:
    """Measured in-sample error and claimed bound per layer against kept weights, for each method.

    Returns ``{method: {"kept": (n_keeps, n_layers), "bound": ..., "measured": ...}}``
    where ``bound`` is the median claimed ``eps`` over the pruned sides of a layer and
    ``measured`` the median over the same sides of the largest relative error on S.
    """
    from .prune import prune

    X_S = _check_points(network, X_S, "X_S")
    A_S = [split_inputs(np.asarray(a, np.float64)) for a in network.trace(X_S)]
    rtol = CHECK_RTOL[network.dtype]
    out = {}
    total, done = len(methods) * len(keeps), 0
    for method in methods:
        kept = np.zeros((len(keeps), len(network.layers)))
        bnd = np.full_like(kept, np.nan)
        meas = np.full_like(kept, np.nan)
        for i, keep in enumerate(keeps):
            res = prune(network, X_S, keep=float(keep), method=method, rng=seed, delta=delta, C=C)
            for k, (layer, tab) in enumerate(zip(network.layers, res.sides)):
                W_hat = res.network.layers[k].weight
                kept[i, k] = np.count_nonzero(W_hat)
                pruned = (tab.nnz > 0) & ~tab.dead & (tab.kept < tab.nnz)
                if pruned.any():
                    _, errors, _ = side_check(A_S[k], layer.weight, W_hat, tab.eps, rtol)
                    bnd[i, k] = np.median(tab.eps[pruned])
                    meas[i, k] = np.median(errors[pruned])
            done += 1
            if progress is not None:
                progress(done, total)
        out[method] = dict(kept=kept, bound=bnd, measured=meas)
    return out


def plot_sweep(data: dict, path, *, title: str = ""):
    """The sweep as a PNG: one panel per layer, error against kept weights (log-log).

    Written atomically to ``path``; with ``path=None`` the PNG bytes are returned instead.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "--plot needs matplotlib, which is in the 'plot' extra: pip install 'sparsify[plot]'."
        ) from None
    from .io import atomic_write

    methods = list(data)
    n_layers = data[methods[0]]["kept"].shape[1]
    fig, axes = plt.subplots(1, n_layers, figsize=(4.2 * n_layers, 3.6), squeeze=False)
    colours = {"det": "tab:blue", "rand": "tab:orange", "hybrid": "tab:green"}
    for k in range(n_layers):
        ax = axes[0, k]
        for method in methods:
            d = data[method]
            c = colours.get(method)
            ax.plot(d["kept"][:, k], d["bound"][:, k], "--", marker="^", color=c, label=f"{method} bound")
            ax.plot(d["kept"][:, k], d["measured"][:, k], "-", marker="o", color=c, label=f"{method} measured")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"kept weights m in layer {k}")
        ax.set_title(f"layer {k}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("relative error on S (median over pruned sides)")
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = buf.getvalue()
    if path is None:
        return png
    atomic_write(path, lambda fh: fh.write(png), "--plot")
