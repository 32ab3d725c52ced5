"""The check loop of ``sparsify verify``: prune with many seeds, compare every side.

The network is pruned with many independent seeds. For every layer, every
neuron side and every point of the batch S (in-sample) and of a held-out batch
T (out-of-sample) we record whether the side's pre-activation of the pruned
layer is within ``(1 ± eps)`` of the original, where ``eps`` is the bound the
method claims for that side (or one value given by the user). From the counts
:mod:`sparsify.verify.stats` gives failure rates with exact Clopper–Pearson
intervals and a verdict.

How trials are counted (docs/theory.md, "Checking the guarantees"): one trial
is one seed, i.e. one independently pruned network. A layer *fails* on a seed
if any of its sides fails at any point of the batch. Seeds are independent, so
the number of failing seeds is binomial and the Clopper–Pearson interval is
exact. Sides and points of one pruned network are not independent (they share
the draws and the allocation); their rates are reported as descriptive
numbers only. By the union bound the theory allows a layer to fail on a seed
with probability at most ``min(1, delta * (sampled sides) * (points))``;
deterministic sides contribute nothing since their bound is certain.

The union-bound allowance is vacuous (``>= 1``) for a testable ``delta`` such
as 0.05 on a real layer, so a second test needs no union bound: per seed, the
fraction of (sampled-or-not side, point) pairs that fail lies in [0, 1], is
i.i.d. over seeds and has mean at most ``delta``; ``pair_verdict`` applies the
same rule to its two-sided Hoeffding interval. ``holds`` in the result means no
in-sample ``verdict`` or ``pair_verdict`` is ``"violated"``.

Convolutions (docs/theory.md S15): the checks run over ``network.prunable_layers``
(inside residual blocks too) on each layer's weight-matrix view, and a
convolution's points are the (x, p) rows of its patch matrix. The checker holds
the patch matrices of S and T in memory (it is a check for batches of moderate
size; pruning itself streams them). The network-level propagation (S12) is
computed for chains of dense layers only and reported as not applicable otherwise.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable

import numpy as np

from ..bounds import DEFAULT_C, DEFAULT_DELTA, patch_sizes
from .._validation import check_choice, check_scalar
from ..network import Network
from ..prune import METHODS, prune
from ..reference import side_preactivations, split_inputs
from .propagation import LIPSCHITZ, RELATIVE_ERROR_ACTIVATIONS, cancellation, propagate, propagate_forward
from .stats import pair_verdict, verdict

__all__ = ["CHECK_RTOL", "COUNTING", "EPS_MAX", "output_error", "side_check", "verify"]

#: slack for rounding when comparing |Z_hat - Z| with eps |Z|, relative to |Z| + |Z_hat|.
CHECK_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}

COUNTING = (
    "one trial = one seed (one independently pruned network); a layer fails on a seed if any of its "
    "sides fails at any point of the batch; allowed_rate = min(1, delta * max sampled sides * points) "
    "by the union bound (deterministic sides never fail in theory); pair_verdict tests the per-seed "
    "fraction of failing (side, point) pairs (i.i.d. over seeds, mean <= delta) with a Hoeffding interval; "
    "side_failure_rate is descriptive only, since sides of one network are dependent"
)

#: largest tolerance ``eps`` one may impose on every side: far beyond any meaningful relative
#: error (above 1 a side may lose all of its pre-activation), and small enough that the
#: network-level bounds computed from it stay finite on networks of ordinary depth.
EPS_MAX = 1e6


# --- measurements -------------------------------------------------------------------
def side_check(A: np.ndarray, W: np.ndarray, W_hat: np.ndarray, eps, rtol: float):
    """Compare each side's pre-activation of ``W_hat`` with that of ``W`` at the rows of ``A``.

    ``A`` must already be sign-split (nonnegative). ``Z±`` and the pruned
    ``Z_hat±`` are those of :func:`sparsify.reference.side_preactivations`,
    computed in float64. A side fails at a point if ``|Z_hat - Z| > eps |Z| + rtol (|Z| + |Z_hat|)``.

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
    parts = side_preactivations(A, W.astype(np.float64), W_hat.astype(np.float64))
    for col, (Z, Zh) in enumerate(parts):
        err = np.abs(Zh - Z)
        bad = err > eps[:, col] * Z + rtol * (Z + Zh)
        fails[:, col] = bad.any(axis=0)
        pair_fails[:, col] = bad.sum(axis=0)
        errors[:, col] = _relative(err, Z, axis=0) if A.shape[0] else 0.0
    return fails, errors, pair_fails


def _relative(d: np.ndarray, z: np.ndarray, axis: int = 1) -> np.ndarray:
    """``max d / |z|`` along ``axis`` (a term is 0 where ``d`` and ``z`` are 0, inf where only ``z`` is 0)."""
    absz = np.abs(np.asarray(z, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(absz > 0, d / np.where(absz > 0, absz, 1.0), np.where(d > 0, np.inf, 0.0))
    return rel.max(axis=axis)


def output_error(z: np.ndarray, z_hat: np.ndarray) -> np.ndarray:
    """Per point, ``max_i |z_hat_i - z_i| / |z_i|`` (0 where both are 0, inf where only ``z_i`` is 0)."""
    return _relative(np.abs(np.asarray(z_hat, np.float64) - np.asarray(z, np.float64)), z)


def _output_preactivation(network: Network, inputs: list, X) -> np.ndarray:
    """The network's output pre-activation, flattened per point: the last layer's pre-activation
    from ``inputs = network.trace(X)`` when the last layer has weights, else the output itself
    (a network ending in a pool, a flatten or a residual block)."""
    last = network.layers[-1]
    out = last.preactivation(inputs[-1]) if last.prunable else network.forward(X)
    return np.reshape(out, (out.shape[0], -1))


def _is_chain(network: Network) -> bool:
    """True for a plain chain of dense layers, where the network-level propagation applies."""
    return all(layer.kind == "dense" for layer in network.layers)


def _input_rows(network: Network, trace: list) -> list[np.ndarray]:
    """Sign-split float64 input matrix of every prunable layer: a dense layer's inputs, a
    convolution's patch matrix (one row per (point, patch) pair, docs/theory.md S15)."""
    return [split_inputs(np.asarray(layer.input_matrix(a), np.float64))
            for layer, a in zip(network.prunable_layers, trace)]


#: why the network-level bounds are not computed for networks other than dense chains
NOT_CHAIN = ("network-level propagation (docs/theory.md S12) covers chains of dense layers only; for networks with "
             "convolutions, pooling or residual blocks only the measured output error is reported (the per-layer "
             "checks above run per (point, patch) row)")


class _SetStats:
    """Accumulates the measurements of one layer on one batch over the seeds."""

    def __init__(self, n_rows: int):
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
        lo, hi, pv = pair_verdict(frac, n_seeds, delta, confidence)
        out["pair_failure_rate"] = frac
        out["pair_failure_rate_lower"] = lo
        out["pair_failure_rate_upper"] = hi
        out["pair_verdict"] = pv
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


def _check_points(network: Network, X, name: str) -> np.ndarray:
    X = network.check_input(X, name)
    if X.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty; give at least one point.")
    return X


def _context(network: Network, X_S: np.ndarray, X_T: np.ndarray) -> dict:
    """What every seed reads: one forward pass per batch (the side checks, the
    cancellation factors, the forward bound and the original output all use it)."""
    layers_ = network.prunable_layers
    batches = {"S": X_S, "T": X_T}
    traces = {"S": network.trace(X_S), "T": network.trace(X_T)}
    views = [layer.weight_matrix for layer in layers_]  # a convolution's (c_out, c_in*kh*kw) view
    acts = network.activations
    chain = _is_chain(network)
    applicable = chain and all(a in RELATIVE_ERROR_ACTIVATIONS for a in acts[:-1])
    return dict(
        network=network, X=batches, traces=traces, acts=acts, chain=chain, views=views,
        A_split={name: _input_rows(network, tr) for name, tr in traces.items()},
        nonempty=[np.stack([(W > 0).any(1), (W < 0).any(1)], 1) for W in views],
        applicable=applicable, forward_ok=chain and all(a in LIPSCHITZ for a in acts),
        z_orig={name: _output_preactivation(network, tr, batches[name]) for name, tr in traces.items()},
        cancel={name: [cancellation(a, layer.weight, layer.bias) for a, layer in zip(tr, layers_)]
                for name, tr in traces.items()} if applicable else {},
    )


def _seed_measurements(ctx: dict, opts: dict, seed: int) -> dict:
    """Prune with one seed and measure every side and the output on S and T (plain arrays)."""
    network, eps = ctx["network"], opts["eps"]
    res = prune(network, ctx["X"]["S"], keep=opts["keep"], budget=opts["budget"], method=opts["method"],
                allocation=opts["allocation"], rng=seed, delta=opts["delta"], C=opts["C"],
                patch_reduction=opts["patch_reduction"])
    layers, eps_neuron = [], []
    for k, tab in enumerate(res.sides):
        W, W_hat = ctx["views"][k], res.network.prunable_layers[k].weight_matrix
        claimed = tab.eps if eps is None else np.full(tab.eps.shape, eps)
        nonempty = ctx["nonempty"][k]
        pruned = nonempty & ~tab.dead & (tab.kept < tab.nnz)
        row = dict(claimed=claimed, pruned=pruned, n_sampled=int(tab.sampled.sum()),
                   eps_pruned=np.asarray(tab.eps)[pruned])
        for name, A in ctx["A_split"].items():
            row[name] = side_check(A[k], W, W_hat, claimed, opts["rtol"])
        layers.append(row)
        eps_neuron.append(np.max(np.where(nonempty, claimed, 0.0), axis=1))
    out = dict(layers=layers, measured={}, bound={}, forward={},
               report=dict(kept=[int(row["kept"]) for row in res.report.layers], allocation=res.report.allocation,
                           achieved=int(res.report.achieved), total=int(res.report.total)))
    acts, biases = ctx["acts"], [layer.bias for layer in network.prunable_layers]
    for name, X in ctx["X"].items():
        z_hat = _output_preactivation(res.network, res.network.trace(X), X)
        out["measured"][name] = output_error(ctx["z_orig"][name], z_hat)
        if ctx["applicable"]:
            out["bound"][name] = np.asarray(propagate(eps_neuron, ctx["cancel"][name], activations=acts))
        if ctx["forward_ok"]:
            d = propagate_forward(eps_neuron, network.weights, ctx["traces"][name], acts, biases)
            out["forward"][name] = _relative(d, ctx["z_orig"][name])
    return out


def _seed_task(shared, seed: int) -> dict:
    """One seed as a Dask task (``shared`` is the context and the options, sent once per worker)."""
    ctx, opts = shared
    return _seed_measurements(ctx, opts, seed)


def verify(network, X_S, X_T, *, keep=0.1, budget=None, method: str = "hybrid", allocation=None,
           seeds: int = 50, first_seed: int = 0, eps=None, delta: float = DEFAULT_DELTA,
           C: float = DEFAULT_C, confidence: float = 0.95, patch_reduction: str | None = None,
           progress: Callable[[int, int], None] | None = None, dask=None) -> dict:
    """Prune ``network`` with seeds ``first_seed, ..., first_seed + seeds - 1`` and check the bounds.

    Parameters
    ----------
    network : Network
    X_S : array (n_S, *input_shape)
        The batch S used for pruning (in-sample checks: no assumption).
    X_T : array (n_T, *input_shape)
        Held-out points (out-of-sample checks: rest on ``g(x) <= C s``).
    keep, budget, method, allocation, delta, C
        Passed to :func:`sparsify.prune`.
    seeds : int
        Number of independent prunings (trials).
    eps : float, optional
        One tolerance for every side instead of the bound each side claims, in
        ``(0, EPS_MAX]``.
    confidence : float
        Level of the Clopper–Pearson intervals.
    patch_reduction : "max" | "mean", optional
        Passed to :func:`sparsify.prune` for convolutions. The per-side checks of a
        convolution run per (point, patch) row of its patch matrix (docs/theory.md
        S15); the bounds hold per row with ``"max"``, whereas ``"mean"`` (the default
        of method "det") only bounds the mean over the patches of a point, so
        per-row failures are expected with it.
    progress : callable(done, total), optional
        Called after each seed (with ``dask``: each finished seed).
    dask : None, "local", "local:N", "tcp://HOST:PORT" or a distributed.Client
        Run the seeds as independent tasks on Dask (:mod:`sparsify.distributed`);
        the result is the same as serially, bit for bit (the seeds' measurements
        are combined in seed order on the caller's side).

    Returns
    -------
    dict
        ``{"layers": [...], "network": {...}, "holds": bool, ...}``, JSON-ready;
        each layer entry holds the in-sample statistics at top level and the
        same keys under ``"out_of_sample"`` (docs/theory.md explains each key).
    """
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    check_choice(method, "method", METHODS)
    X_S = _check_points(network, X_S, "X_S")
    X_T = _check_points(network, X_T, "X_T")
    seeds = check_scalar(seeds, "seeds", kind="int", low=1)
    first_seed = check_scalar(first_seed, "first_seed", kind="int", low=0)
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    confidence = check_scalar(confidence, "confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    eps = check_scalar(eps, "eps", low=0.0, low_open=True, high=EPS_MAX, allow_none=True)
    rtol = CHECK_RTOL[network.dtype]

    if dask is not None:
        from ..distributed import check_dask

        check_dask(dask)  # refused before any work
    ctx = _context(network, X_S, X_T)
    opts = dict(keep=keep, budget=budget, method=method, allocation=allocation, delta=delta, C=C, eps=eps,
                rtol=rtol, patch_reduction=patch_reduction)
    layers_, nonempty = network.prunable_layers, ctx["nonempty"]
    applicable, forward_ok, chain, acts = ctx["applicable"], ctx["forward_ok"], ctx["chain"], ctx["acts"]
    stats = {name: [_SetStats(a.shape[0]) for a in A] for name, A in ctx["A_split"].items()}
    net_measured = {"S": [], "T": []}
    net_bound = {"S": [], "T": []}
    net_forward = {"S": [], "T": []}
    sampled_counts = np.zeros((seeds, len(layers_)), np.int64)
    eps_all = [[] for _ in layers_]
    seed_list = range(first_seed, first_seed + seeds)
    with ExitStack() as stack:
        if dask is None:  # one seed after the other, here
            results = (_seed_measurements(ctx, opts, seed) for seed in seed_list)
        else:  # seeds as tasks; folded below in seed order, so the same bits as serially
            from ..distributed import connect, run_ordered

            client = stack.enter_context(connect(dask))
            results = run_ordered(client, _seed_task, (ctx, opts), seed_list, name="sparsify-verify-seed",
                                  progress=progress)
        for r, out in enumerate(results):
            seed = first_seed + r
            for k, per_layer in enumerate(out["layers"]):
                sampled_counts[r, k] = per_layer["n_sampled"]
                eps_all[k].append(per_layer["eps_pruned"])
                for name in ("S", "T"):
                    fails, errors, pair_fails = per_layer[name]
                    stats[name][k].add(seed, fails, errors, pair_fails, nonempty[k], per_layer["pruned"],
                                       per_layer["claimed"], per_layer["n_sampled"])
            for name in ("S", "T"):
                net_measured[name].append(out["measured"][name])
                if applicable:
                    net_bound[name].append(out["bound"][name])
                if forward_ok:
                    net_forward[name].append(out["forward"][name])
            if progress is not None and dask is None:
                progress(r + 1, seeds)
    report = out["report"]

    layers = []
    sizes = patch_sizes(network)
    for k, layer in enumerate(layers_):
        row = dict(layer=k, shape="x".join(map(str, layer.weight.shape)), patches=int(sizes[k][0]),
                   activation=layer.activation,
                   sides=int(nonempty[k].sum()), kept=int(report["kept"][k]), total=int(layer.weight.size),
                   sampled_sides_mean=float(sampled_counts[:, k].mean()),
                   eps_median=float(np.median(np.concatenate(eps_all[k]))) if sum(e.size for e in eps_all[k]) else 0.0)
        row.update(stats["S"][k].summary(seeds, delta, confidence))
        row["out_of_sample"] = stats["T"][k].summary(seeds, delta, confidence)
        layers.append(row)
    net = dict(product_applicable=bool(applicable), forward_applicable=bool(forward_ok),
               quantity="output pre-activation: max over output neurons of |z_hat - z| / |z|, per point and seed")
    for name, key in (("S", "in_sample"), ("T", "out_of_sample")):
        net[key] = _network_summary(net_measured[name], {"product": net_bound[name], "forward": net_forward[name]})
    if not chain:
        net["product_reason"] = net["forward_reason"] = NOT_CHAIN
    elif not applicable:
        net["product_reason"] = (f"hidden activations {acts[:-1]} include one outside "
                                 f"{sorted(RELATIVE_ERROR_ACTIVATIONS)}")
    return dict(
        method=method, allocation=report["allocation"], keep=keep, budget=budget,
        kept=int(report["achieved"]), total=int(report["total"]), seeds=seeds, first_seed=int(first_seed),
        delta=float(delta), C=float(C), eps=eps, confidence=float(confidence), patch_reduction=patch_reduction,
        n_S=int(X_S.shape[0]), n_T=int(X_T.shape[0]), counting=COUNTING,
        layers=layers, network=net,
        holds=all("violated" not in (row["verdict"], row["pair_verdict"]) for row in layers),
        holds_out_of_sample=all("violated" not in (row["out_of_sample"]["verdict"], row["out_of_sample"]["pair_verdict"])
                                for row in layers),
    )
