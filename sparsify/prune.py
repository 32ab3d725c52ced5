"""SiPP: prune a network with sensitivities from a batch S (docs/theory.md S6–S13).

Pipeline: ``sensitivity`` per layer → per-side targets ``m`` from the budget
(:mod:`sparsify.allocation`) → each side kept whole, deterministically (top-m)
or by importance sampling (:mod:`sparsify.sampling`) → pruned network, masks and
report (:mod:`sparsify.report`).

Side conventions: every table has shape (n_out, 2); column 0 is the positive
side of a neuron (``w > 0``), column 1 the negative side (``w < 0``). Flat side
arrays run over layers, then neurons, then the two columns.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import allocation as alloc
from ._blas import single_threaded_blas
from ._selection import select_layers
from ._validation import check_choice, check_rng, check_scalar
from .bounds import DEFAULT_C, DEFAULT_DELTA, alpha, eps_rand, hybrid_rule, patch_sizes
from .network import Network
from .report import REPORT_POINTS, Report, build_report
from .sampling import det_sides, draws_for_unique, rand_sides
from .sensitivity import sensitivity_and_head

__all__ = ["COUNT_RTOL", "DEFAULT_METHOD", "METHODS", "PruneResult", "SideTable", "check_options", "prune", "result_from_masks"]

METHODS = ("det", "rand", "hybrid")
#: the method of :func:`prune` when none is given
DEFAULT_METHOD = "hybrid"
#: reduction of a convolution's sensitivities over patches per method, as the authors
#: (docs/theory.md S15): their deterministic method averages, their sampling methods take the max
DEFAULT_PATCH_REDUCTION = {"det": "mean", "rand": "max", "hybrid": "max"}
#: promised relative tolerance on the realised kept count when sides are sampled (docs/theory.md
#: S11); the chunked draws of ``_Plan.draw`` typically land within a few weights
COUNT_RTOL = 0.005


@dataclass(frozen=True)
class SideTable:
    """Per-side facts of one layer; every field has shape (n_out, 2).

    nnz: weights on the side; mass: ``S_i = sum_j s_ij``; target: allocated ``m``;
    kept: distinct weights kept; sampled: side was importance-sampled; draws: ``N``
    (0 unless sampled); dead: ``nnz > 0`` and ``S_i == 0``; eps_det: ``C`` times the
    pruned sensitivity mass (of the top-m choice for sampled sides); eps_rand:
    ``eps_rand`` at ``N`` for sampled sides, at ``m`` otherwise; eps: the bound the
    method claims (eps_rand if sampled, else eps_det).
    """

    nnz: np.ndarray
    mass: np.ndarray
    target: np.ndarray
    kept: np.ndarray
    sampled: np.ndarray
    draws: np.ndarray
    dead: np.ndarray
    eps_det: np.ndarray
    eps_rand: np.ndarray
    eps: np.ndarray


@dataclass(frozen=True, repr=False)
class PruneResult:
    """What :func:`prune` returns.

    network: the pruned :class:`~sparsify.Network`; masks: one boolean array per
    layer (True = kept); report: :class:`~sparsify.report.Report`; sensitivities:
    ``s`` per layer; sides: one :class:`SideTable` per layer. ``repr`` is a short
    summary; ``print(result.report)`` gives the full table.
    """

    network: Network
    masks: list
    report: Report
    sensitivities: list
    sides: list

    def __repr__(self) -> str:
        rep = self.report
        layers = ", ".join(f"{r['layer']}: {r['kept']}/{r['total']}" + (" dense" if r.get("excluded") else "")
                           for r in rep.layers)
        return (f"PruneResult(method={rep.method!r}, allocation={rep.allocation!r},\n"
                f"  keep requested {rep.keep_requested:.4f} ({rep.requested} weights), "
                f"achieved {rep.keep_achieved:.4f} ({rep.achieved}),\n"
                f"  kept per layer {{{layers}}};\n"
                f"  fields: network, masks, report, sensitivities, sides)")


def check_options(method, allocation, delta, C):
    """Validated ``(allocation, delta, C)`` for ``method`` (allocation None picks the method's default)."""
    check_choice(method, "method", METHODS)
    if allocation is None:
        allocation = alloc.DEFAULT_ALLOCATION[method]
    check_choice(allocation, "allocation", alloc.ALLOCATIONS)
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    # the assumption g(x) <= C s needs C >= 1 (on S itself g <= s)
    C = check_scalar(C, "C (>= 1: g <= s on S itself)", low=1.0)
    return allocation, delta, C


def _dense_table(W, s) -> SideTable:
    """The side table of a layer left dense: every weight kept, no bound claimed."""
    nnz, mass = alloc.side_stats(W, s)
    zeros = np.zeros(nnz.shape)
    return SideTable(nnz=nnz, mass=mass, target=nnz, kept=nnz, sampled=np.zeros(nnz.shape, bool),
                     draws=np.zeros_like(nnz), dead=(nnz > 0) & (mass == 0), eps_det=zeros, eps_rand=zeros,
                     eps=zeros)


def _check_finite(weights, method: str) -> None:
    """Refuse reweighted weights that overflowed (finite input, infinite output)."""
    for k, w in enumerate(weights):
        if not np.all(np.isfinite(w)):
            raise ValueError(
                f"method={method!r}: reweighting overflowed in layer {k}: a sampled weight w c S / (N s) "
                f"exceeds the largest {w.dtype} (the factor S / (N s) >= 1 pushed a weight near that limit "
                "over it); the input itself is finite. Use method='det', float64 weights, or rescale that layer."
            )


def prune(network, X_S, keep=None, budget=None, method: str = DEFAULT_METHOD, allocation: str | None = None,
          rng=None, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C, *, layers=None,
          exclude=None, patch_reduction: str | None = None, reconstruct: bool = False,
          calibration=None, lam=None, pattern=None, dask=None) -> PruneResult:
    """Prune ``network`` with SiPP using the batch ``X_S``.

    Parameters
    ----------
    network : Network
    X_S : array (n_points, n_in), memory-mapped ``.npy``, or iterable of such batches
        The batch S defining the sensitivities (at least one point). Streamed S
        is read once and gives the same bits as the whole array; the report's
        measured errors use its first ``REPORT_POINTS`` points.
    keep : float in (0, 1], sequence of floats, or mapping {layer index: float}, optional
        Fraction of prunable weights to keep. One float: one budget over all
        pruned layers, allocated across them. A sequence (one fraction per
        layer) or a mapping (the layers named; the others stay dense): each
        layer gets its own budget, allocated within the layer. Give exactly one
        of keep/budget.
    budget : int, optional
        Number of weights to keep over the pruned layers, between 1 and their
        weight count.
    method : {"det", "rand", "hybrid"}
        Per side: keep the top-m sensitivities; importance-sample with
        reweighting; or sample iff ``eps_det(m) > eps_rand(m)`` (docs/theory.md S9).
    allocation : {"global", "balanced"}, optional
        Budget rule (docs/theory.md S10); default "global" for det, "balanced" otherwise.
    rng : None, int or numpy.random.Generator
        Source of all randomness; the same seed gives bit-identical results.
    delta, C : float
        Failure probability and the out-of-sample constant of the bounds.
    layers, exclude : list of int, optional
        At most one: the layers to prune, or the layers to leave dense (often
        the first and last; negative indices count from the end). A dense
        layer keeps every weight bit for bit, is not counted in the budget and
        is marked in the report.
    patch_reduction : {"max", "mean"}, optional
        Reduction of a convolution's ``g_ij(x, p)`` over patches (docs/theory.md S15);
        default per method as the authors (:data:`DEFAULT_PATCH_REDUCTION`).
    reconstruct, calibration, lam : bool, array (n, n_in), float > 0
        Refit the kept weights and biases by ridge least squares on S plus
        ``calibration`` (relative ridge ``lam``); see :mod:`sparsify.reconstruct`.
    pattern : "N:M", optional
        Keep the top-N sensitivities of every group of M consecutive inputs
        (method "det"; replaces keep/budget); see :mod:`sparsify.patterns`.
    dask : None, "local", "local:N", "tcp://HOST:PORT" or a distributed.Client
        Where the sensitivities of a ``dask.array`` S are computed (see
        :func:`sparsify.sensitivity`); the result is the same bits.

    Returns
    -------
    PruneResult
        The kept count equals the budget exactly when nothing is sampled; with
        sampled sides it misses by the sampling noise of the last few sides (a few
        weights, well within 0.5% on real networks), because a side's draw count is
        fixed before its draws to keep the estimator unbiased.
    """
    t0 = time.perf_counter()
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    # --- N:M pattern and least-squares refit (sparsify.patterns, sparsify.reconstruct) ---
    if reconstruct is not False or pattern is not None or calibration is not None or lam is not None:
        from .reconstruct import sipp_with_options

        check_options(method, allocation, delta, C)
        if layers is not None or exclude is not None or not isinstance(keep, (type(None), int, float)):
            raise ValueError("layers/exclude/per-layer keep: not supported together with reconstruct, calibration, "
                             "lam or pattern yet; prune every layer with one keep, or refit separately with "
                             "sparsify.reconstruct.reconstruct.")
        return sipp_with_options(network, X_S, keep=keep, budget=budget, method=method, allocation=allocation,
                                 rng=rng, delta=delta, C=C, reconstruct=reconstruct, calibration=calibration,
                                 lam=lam, pattern=pattern)
    # --- end ---
    allocation, delta, C = check_options(method, allocation, delta, C)
    sel = select_layers(network, keep, budget, layers, exclude)
    gen = check_rng(rng)
    with single_threaded_blas():  # all parallel work on Numba's threads (see sparsify._blas)
        reduction = DEFAULT_PATCH_REDUCTION[method] if patch_reduction is None else patch_reduction
        s_list, n_points, heads = sensitivity_and_head(network, X_S, REPORT_POINTS, patch_reduction=reduction,
                                                       dask=dask)
        weights = [layer.weight_matrix for layer in network.prunable_layers]  # weight-matrix views
        s_mats = [s.reshape(W.shape) for s, W in zip(s_list, weights)]
        sizes = patch_sizes(network)
        new_w = list(weights)  # layers left dense keep their arrays
        tables = [_dense_table(W, s) if k in sel.excluded else None for k, (W, s) in enumerate(zip(weights, s_mats))]
        for group, B in sel.groups:  # one budget per group, allocated over its layers; draws in group order
            out, group_tables = _Plan([weights[k] for k in group], [s_mats[k] for k in group], C, delta,
                                      [sizes[k] for k in group]).run(method, allocation, B, gen)
            for k, w, tab in zip(group, out, group_tables):
                new_w[k], tables[k] = w, tab
        _check_finite(new_w, method)
        pruned = network.with_weights(new_w)
        masks = [(w != 0).reshape(layer.weight.shape) for w, layer in zip(new_w, network.prunable_layers)]
        report = build_report(network, heads, new_w, tables, method=method, allocation=allocation,
                              requested=sel.requested, delta=delta, C=C, seconds=time.perf_counter() - t0,
                              n_points=n_points, excluded=sel.excluded, layer_keep=sel.layer_keep)
    return PruneResult(pruned, masks, report, s_list, tables)


class _Plan:
    """The per-side bookkeeping of one prune call (flat arrays over all sides)."""

    def __init__(self, weights, s_list, C, delta, sizes=None):
        self.weights, self.s_list, self.C, self.delta = weights, s_list, C, delta
        stats = [alloc.side_stats(W, s) for W, s in zip(weights, s_list)]
        self.shapes = [W.shape[0] for W in weights]
        self.nnz = np.concatenate([n.ravel() for n, _ in stats])
        self.mass = np.concatenate([m.ravel() for _, m in stats])
        # sides with at least one weight of positive sensitivity can be sampled
        self.support = np.concatenate([alloc.side_sums(W, s > 0).ravel() for W, s in zip(weights, s_list)])
        self.dead = (self.nnz > 0) & (self.mass == 0)
        self.inv_eta = np.concatenate([np.full(2 * n, 1.0 / n) for n in self.shapes])
        self.layer_of = np.concatenate([np.full(2 * n, k) for k, n in enumerate(self.shapes)])
        self.row_of = np.concatenate([np.repeat(np.arange(n), 2) for n in self.shapes])
        self.sign_of = np.tile([1, -1], len(self.nnz) // 2)
        self.offsets = np.concatenate([[0], np.cumsum([2 * n for n in self.shapes])])
        # patches P and kernel elements k of each side's layer, the arguments of alpha (S8, S15)
        sizes = [(1, 1)] * len(weights) if sizes is None else sizes
        self.P = np.concatenate([np.full(2 * n, P, np.float64) for n, (P, _) in zip(self.shapes, sizes)])
        self.k = np.concatenate([np.full(2 * n, k, np.float64) for n, (_, k) in zip(self.shapes, sizes)])

    # --- targets per side ---------------------------------------------------
    def targets(self, allocation: str, B: int) -> np.ndarray:
        if allocation == "balanced":
            return alloc.balanced_targets(self.mass, self.nnz, self.inv_eta, B, self.C, self.delta,
                                          alpha_side=alpha(self.C, self.delta, self.P, self.k))
        eligible = [W != 0 for W in self.weights]
        demoted = []
        for k, W in enumerate(self.weights):
            dead = self.dead[self.offsets[k]:self.offsets[k + 1]].reshape(-1, 2)
            demoted.append(np.where(W > 0, dead[:, :1], np.where(W < 0, dead[:, 1:], False)))
        masks = alloc.global_top_b(self.s_list, B, eligible, demoted)
        return np.concatenate([alloc.side_sums(W, mk).ravel() for mk, W in zip(masks, self.weights)])  # int64 counts

    # --- the treatment of every side at given targets (no randomness) ---------------
    def plan(self, method: str, m: np.ndarray):
        """Decide each side's treatment for targets ``m``; nothing is drawn here.

        Returns the weights of the deterministic and full sides (sampled sides are
        left zero), the kept count of every non-sampled side, and per-side flags.
        """
        # zero weights belong to no side; copy them as they are (keeps the sign of -0.0)
        out = [np.where(W == 0, W, 0).astype(W.dtype) for W in self.weights]
        full = m >= self.nnz
        partial = (m > 0) & ~full
        # deterministic top-m for every partially kept side (also gives eps_det)
        for k, W in enumerate(self.weights):
            sl = slice(self.offsets[k], self.offsets[k + 1])
            sel = np.flatnonzero(partial[sl] | (full[sl] & (self.nnz[sl] > 0)))
            mm = np.where(full[sl][sel], self.nnz[sl][sel], m[sl][sel])
            det_sides(W, self.s_list[k], self.row_of[sl][sel], self.sign_of[sl][sel], mm, out[k])
        bound = np.concatenate([
            alloc.det_bound(W, s, o != 0, self.mass[self.offsets[k]:self.offsets[k + 1]].reshape(-1, 2), self.C).ravel()
            for k, (o, W, s) in enumerate(zip(out, self.weights, self.s_list))
        ])
        eps_d = np.where(full, 0.0, bound)
        eps_r_m = eps_rand(np.maximum(m, 0), self.mass, self.C, self.delta, self.P, self.k)
        # sampling needs a live side and fewer targets than weights it can draw (s > 0);
        # a side whose target is all its weights is kept unchanged (S7)
        can_sample = partial & ~self.dead & (m < self.support)
        if method == "det":
            sampled = np.zeros_like(partial)
        elif method == "rand":
            sampled = can_sample
        else:
            sampled = can_sample & hybrid_rule(eps_d, eps_r_m)
        kept = np.where(full, self.nnz, np.where(sampled, 0, np.minimum(m, self.nnz))).astype(np.int64)
        for t in np.flatnonzero(sampled):  # sampled sides start empty; their top-m choice only served eps_det
            k, i, sign = self.layer_of[t], self.row_of[t], self.sign_of[t]
            W = self.weights[k]
            out[k][i, (W[i] > 0) if sign > 0 else (W[i] < 0)] = 0
        flags = dict(sampled=sampled, draws=np.zeros_like(m), eps_det=eps_d,
                     eps_rand=np.where(full, 0.0, eps_r_m))
        return out, kept, flags

    def _q(self, t: int) -> np.ndarray:
        """Sampling distribution ``q = s / S`` of side ``t`` over its entries with ``s > 0``."""
        k, i, sign = self.layer_of[t], self.row_of[t], self.sign_of[t]
        W, s = self.weights[k][i], self.s_list[k][i].astype(np.float64)
        qs = s[((W > 0) if sign > 0 else (W < 0)) & (s > 0)]
        return qs / qs.sum()

    def draw(self, out, kept, flags, m, gen) -> None:
        """Importance-sample every sampled side once; fills ``out``, ``kept`` and ``flags``.

        The draw count of a side must not depend on that side's own draws, or its
        reweighted estimator stops being unbiased (and the Bernstein bound, which
        needs a fixed N, stops applying). It may depend on *other* sides' draws.
        So sides are drawn in chunks of shrinking size (half of the remaining
        sampled sides, then half of the rest, ...), in side order; each chunk's
        distinct-count targets are its allocated ``m`` plus its share of the
        shortfall of the chunks before it, turned into draw counts by
        ``draws_for_unique``. The realised total then misses the request only by
        the sampling noise of the last few sides.
        """
        idx = np.flatnonzero(flags["sampled"])
        draws = flags["draws"]
        carry, start = 0.0, 0
        while start < idx.size:
            size = max(1, (idx.size - start + 1) // 2)
            chunk = idx[start:start + size]
            start += size
            base = m[chunk].astype(np.float64)
            target = base * (1.0 + carry / base.sum())
            target = np.clip(target, 1e-9, self.support[chunk] - 0.5)
            draws[chunk] = draws_for_unique([self._q(t) for t in chunk], target)
            u = gen.random(int(draws[chunk].sum()))
            used = 0
            for k in np.unique(self.layer_of[chunk]):
                sel = chunk[self.layer_of[chunk] == k]
                n_u = int(draws[sel].sum())
                kept[sel] = rand_sides(self.weights[k], self.s_list[k], self.row_of[sel], self.sign_of[sel],
                                       draws[sel], u[used:used + n_u], out[k])
                used += n_u
            carry += float(base.sum() - kept[chunk].sum())
        sampled = flags["sampled"]
        flags["eps_rand"] = np.where(sampled, eps_rand(np.maximum(draws, 1), self.mass, self.C, self.delta, self.P, self.k),
                                     flags["eps_rand"])

    def run(self, method: str, allocation: str, B: int, gen):
        """Allocate the budget, decide every side, draw the sampled ones once.

        Deterministic and full sides are counted exactly, so without sampling the
        kept count equals the budget; with sampling see :meth:`draw`.
        """
        m = self.targets(allocation, int(min(B, self.nnz.sum())))
        out, kept, flags = self.plan(method, m)
        if flags["sampled"].any():
            self.draw(out, kept, flags, m, gen)
        flags["eps"] = np.where(flags["sampled"], flags["eps_rand"], flags["eps_det"])
        tables = []
        for k, W in enumerate(self.weights):
            sl = slice(self.offsets[k], self.offsets[k + 1])
            shape = (W.shape[0], 2)
            tables.append(SideTable(
                nnz=self.nnz[sl].reshape(shape), mass=self.mass[sl].reshape(shape),
                target=m[sl].reshape(shape), kept=kept[sl].reshape(shape),
                sampled=flags["sampled"][sl].reshape(shape), draws=flags["draws"][sl].reshape(shape),
                dead=self.dead[sl].reshape(shape), eps_det=flags["eps_det"][sl].reshape(shape),
                eps_rand=flags["eps_rand"][sl].reshape(shape), eps=flags["eps"][sl].reshape(shape),
            ))
        return out, tables


def result_from_masks(network, X_S, masks, weights=None, *, method: str, allocation: str,
                      requested: int, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C,
                      seconds: float = 0.0, excluded=(), layer_keep=None, sensitivities=None) -> PruneResult:
    """A :class:`PruneResult` for masks chosen by another rule (baselines).

    ``weights`` (default: the original weights times the masks) may carry
    reweighted values. Side tables record kept counts and the deterministic bound
    ``C * pruned sensitivity mass`` so baselines are reported like SiPP.
    ``excluded`` and ``layer_keep`` go to the report (see
    :func:`sparsify.report.build_report`). ``sensitivities``, the result of
    ``sensitivity_and_head(network, X_S, REPORT_POINTS)`` when the caller has it
    already (S streamed once), replaces reading ``X_S`` again.
    """
    if sensitivities is None:
        sensitivities = sensitivity_and_head(network, X_S, REPORT_POINTS)
    s_list, n_points, heads = sensitivities
    layers = network.prunable_layers
    if weights is None:
        weights = [np.where(np.reshape(mk, layer.weight.shape), layer.weight, 0).astype(layer.dtype)
                   for mk, layer in zip(masks, layers)]
    weights = [np.reshape(w, layer.weight_matrix.shape) for w, layer in zip(weights, layers)]  # matrix views
    tables = []
    for W, W_hat, s, (P, k) in zip([layer.weight_matrix for layer in layers], weights, s_list, patch_sizes(network)):
        s = s.reshape(W.shape)
        nnz, mass = alloc.side_stats(W, s)
        kept_mask = W_hat != 0
        kept = alloc.side_sums(W, kept_mask)
        eps_d = np.where(kept >= nnz, 0.0, alloc.det_bound(W, s, kept_mask, mass, C))
        zeros = np.zeros_like(nnz)
        tables.append(SideTable(nnz=nnz, mass=mass, target=kept, kept=kept, sampled=zeros.astype(bool),
                                draws=zeros, dead=(nnz > 0) & (mass == 0), eps_det=eps_d,
                                eps_rand=np.asarray(eps_rand(np.maximum(kept, 1), mass, C, delta, P, k)) * (kept < nnz),
                                eps=eps_d))
    report = build_report(network, heads, weights, tables, method=method, allocation=allocation,
                          requested=requested, delta=delta, C=C, seconds=seconds, n_points=n_points,
                          excluded=excluded, layer_keep=layer_keep)
    masks = [(w != 0).reshape(layer.weight.shape) for w, layer in zip(weights, layers)]
    return PruneResult(network.with_weights(weights), masks, report, s_list, tables)
