"""SiPP: prune a network with sensitivities from a batch S (DESIGN §2 items 6–13).

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

from . import _blas
from . import allocation as alloc
from ._blas import single_threaded_blas
from ._config import njit, prange
from ._validation import check_choice, check_keep_budget, check_positive, check_rng
from .bounds import DEFAULT_C, DEFAULT_DELTA, _check_C, eps_rand
from .network import Network
from .reference import split_inputs
from .report import Report
from .sampling import det_sides, draws_for_unique, rand_sides
from .sensitivity import (DEFAULT_TILES, HeadBlock, _LayerMaxima, _transpose_part, sensitivity_and_head,
                          stack_sides, z_parts)

METHODS = ("det", "rand", "hybrid")
#: promised relative tolerance on the realised kept count when sides are sampled (DESIGN §2
#: item 11); the chunked draws of ``_Plan.draw`` typically land within a few weights
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


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` returns.

    network: the pruned :class:`~sparsify.Network`; masks: one boolean array per
    layer (True = kept); report: :class:`~sparsify.report.Report`; sensitivities:
    ``s`` per layer; sides: one :class:`SideTable` per layer.
    """

    network: Network
    masks: list
    report: Report
    sensitivities: list
    sides: list


def _check_options(method, allocation, delta, C):
    check_choice(method, "method", METHODS)
    if allocation is None:
        allocation = alloc.DEFAULT_ALLOCATION[method]
    check_choice(allocation, "allocation", alloc.ALLOCATIONS)
    delta = check_positive(delta, "delta", upper=1.0)
    C = _check_C(C)  # the assumption g(x) <= C s needs C >= 1 (on S itself g <= s)
    return allocation, delta, C


def prune(network, X_S, keep=None, budget=None, method: str = "hybrid", allocation: str | None = None,
          rng=None, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C, *, reconstruct: bool = False,
          calibration=None, lam=None, pattern=None) -> PruneResult:
    """Prune ``network`` with SiPP using the batch ``X_S``.

    Parameters
    ----------
    network : Network
    X_S : array (n_points, n_in), memory-mapped ``.npy``, or iterable of such batches
        The batch S defining the sensitivities (at least one point). Streamed S
        is read once and gives the same bits as the whole array; the report's
        measured errors use its first ``REPORT_POINTS`` points.
    keep : float in (0, 1], optional
        Fraction of prunable weights to keep. Give exactly one of keep/budget.
    budget : int, optional
        Number of weights to keep, ``1 <= budget <= network.n_weights``.
    method : {"det", "rand", "hybrid"}
        Per side: keep the top-m sensitivities; importance-sample with
        reweighting; or sample iff ``eps_det(m) > eps_rand(m)`` (DESIGN §2 item 9).
    allocation : {"global", "balanced"}, optional
        Budget rule (DESIGN §2 item 10); default "global" for det, "balanced" otherwise.
    rng : None, int or numpy.random.Generator
        Source of all randomness; the same seed gives bit-identical results.
    delta, C : float
        Failure probability and the out-of-sample constant of the bounds.
    reconstruct, calibration, lam : bool, array (n, n_in), float > 0
        Refit the kept weights and biases by ridge least squares on S plus
        ``calibration`` (relative ridge ``lam``); see :mod:`sparsify.reconstruct`.
    pattern : "N:M", optional
        Keep the top-N sensitivities of every group of M consecutive inputs
        (method "det"; replaces keep/budget); see :mod:`sparsify.patterns`.

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

        _check_options(method, allocation, delta, C)
        return sipp_with_options(network, X_S, keep=keep, budget=budget, method=method, allocation=allocation,
                                 rng=rng, delta=delta, C=C, reconstruct=reconstruct, calibration=calibration,
                                 lam=lam, pattern=pattern)
    # --- end ---
    allocation, delta, C = _check_options(method, allocation, delta, C)
    B = check_keep_budget(keep, budget, network.n_weights)
    gen = check_rng(rng)
    with single_threaded_blas():  # all parallel work on Numba's threads (see sparsify._blas)
        s_list, n_points, heads = sensitivity_and_head(network, X_S, REPORT_POINTS)
        weights = [layer.weight for layer in network.layers]
        plan = _Plan(weights, s_list, C, delta)
        new_w, tables, achieved = plan.run(method, allocation, B, gen)
        pruned = network.with_weights(new_w)
        masks = [w != 0 for w in new_w]
        report = build_report(network, heads, new_w, tables, method=method, allocation=allocation,
                              requested=B, delta=delta, C=C, seconds=time.perf_counter() - t0, n_points=n_points)
    return PruneResult(pruned, masks, report, s_list, tables)


class _Plan:
    """The per-side bookkeeping of one prune call (flat arrays over all sides)."""

    def __init__(self, weights, s_list, C, delta):
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

    # --- targets per side ---------------------------------------------------
    def targets(self, allocation: str, B: int) -> np.ndarray:
        if allocation == "balanced":
            return alloc.balanced_targets(self.mass, self.nnz, self.inv_eta, B, self.C, self.delta)
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
        eps_r_m = eps_rand(np.maximum(m, 0), self.mass, self.C, self.delta)
        # sampling needs a live side and fewer targets than weights it can draw (s > 0);
        # a side whose target is all its weights is kept unchanged (§2 item 7)
        can_sample = partial & ~self.dead & (m < self.support)
        if method == "det":
            sampled = np.zeros_like(partial)
        elif method == "rand":
            sampled = can_sample
        else:
            sampled = can_sample & (eps_d > eps_r_m)
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
        flags["eps_rand"] = np.where(sampled, eps_rand(np.maximum(draws, 1), self.mass, self.C, self.delta),
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
        return out, tables, int(kept.sum())


# --- report -------------------------------------------------------------------------
def side_errors(A: np.ndarray, W: np.ndarray, W_hat: np.ndarray) -> np.ndarray:
    """Measured relative error of each side's pre-activation, max over the points.

    ``A`` is sign-split; ``Z± = A @ W±.T`` with the sign parts of ``W_hat`` taken by
    the original weight's sign. Returns (n_out, 2) with NaN for sides whose ``Z``
    is 0 at every point. Readable twin: :func:`sparsify.reference.side_errors`;
    here ``A`` becomes one :class:`~sparsify.sensitivity.HeadBlock` (the layout
    of the sensitivity step) and :func:`head_side_errors` does the rest.
    """
    A = np.ascontiguousarray(split_inputs(A), dtype=W.dtype)
    acc = _LayerMaxima(W, DEFAULT_TILES)  # padded [W+; W-]; no max-times pass is run
    AT, r = acc.buffers(A.shape[0])
    _transpose_part(A, AT, 0)
    Z = np.empty_like(r)
    with single_threaded_blas():
        _blas._matmul_rows(acc.stacked, AT, Z, z_parts(Z.shape[0]))
        return head_side_errors([HeadBlock(AT, Z, A.shape[0])], W, W_hat)


def head_side_errors(head: list, W: np.ndarray, W_hat: np.ndarray) -> np.ndarray:
    """:func:`side_errors` on the points of ``head`` (the sensitivity step's blocks, with their ``Z``).

    Per block, ``Ẑ = [Ŵ+; Ŵ-] @ AT`` in the same padded, interleaved layout and the
    same row blocks as ``Z``, so the rows of a side kept whole are the same product as
    in ``Z``, with the same bits (error exactly 0); then one pass of
    :func:`_side_error_merge` folds the block's maxima into the result.
    """
    hat = np.empty((head[0].Z.shape[0], head[0].AT.shape[0]), dtype=W.dtype)
    stack_sides(W, np.asarray(W_hat, dtype=W.dtype), hat)  # as the sensitivity step stacks W
    parts = z_parts(hat.shape[0])
    out = np.full((W.shape[0], 2), np.nan)
    with single_threaded_blas():
        for block in head:
            Z_hat = np.empty_like(block.Z)
            _blas._matmul_rows(hat, block.AT, Z_hat, parts)
            _side_error_merge(block.Z, Z_hat, block.points, out)
    return out


@njit(parallel=True)
def _side_error_merge(Z, Z_hat, points, out):
    """``out[i, c] = max(out[i, c], max_x |(|Zh| - |Z|)| / |Z|)`` over the first ``points``
    columns with ``Z != 0``, in float64; NaN in ``out`` means no such point yet.

    Rows of ``Z`` and ``Z_hat``: ``2i`` the positive side of neuron ``i``, ``2i+1`` the
    negative one; ``c`` = 0 for +, 1 for -.
    """
    n = out.shape[0]
    for i in prange(n):
        for c in range(2):
            best = out[i, c]
            row = 2 * i + c
            for x in range(points):
                z = abs(np.float64(Z[row, x]))
                if z > 0:
                    rel = abs(abs(np.float64(Z_hat[row, x])) - z) / z
                    if not rel <= best:  # also replaces the initial NaN
                        best = rel
            out[i, c] = best


#: points of S used for the measured-error columns of the report
REPORT_POINTS = 4096


def build_report(network, heads, new_weights, tables, *, method, allocation, requested, delta, C, seconds,
                 n_points: int) -> Report:
    """Assemble the :class:`Report` for pruned weights ``new_weights`` of ``network``.

    ``heads`` (per layer a list of :class:`~sparsify.sensitivity.HeadBlock`, or None)
    hold the first points of S, on which the measured errors are computed (see
    :func:`sparsify.sensitivity.sensitivity_and_head`); ``n_points`` is |S|.
    """
    if heads is None:
        heads = [None] * len(network.layers)
    rows = []
    for k, (layer, W_hat, tab, head) in enumerate(zip(network.layers, new_weights, tables, heads)):
        W = layer.weight
        kept = int(np.count_nonzero(W_hat))
        nb = 0 if layer.bias is None else layer.bias.size
        live = (tab.nnz > 0) & ~tab.dead
        partial = live & (tab.kept < tab.nnz)
        errs = head_side_errors(head, W, W_hat) if head else np.full(tab.nnz.shape, np.nan)
        err_live = errs[live & ~np.isnan(errs)]
        eps_live = tab.eps[live]
        rows.append(dict(
            layer=k, shape=f"{W.shape[0]}x{W.shape[1]}", activation=layer.activation,
            kept=kept, total=int(W.size), kept_with_bias=kept + nb, total_with_bias=int(W.size) + nb,
            keep=kept / W.size, live_sides=int(live.sum()), dead_sides=int(tab.dead.sum()),
            sampled_sides=int(tab.sampled.sum()), det_sides=int((partial & ~tab.sampled).sum()),
            full_sides=int((live & (tab.kept >= tab.nnz)).sum()),
            empty_sides=int((live & (tab.kept == 0)).sum()),
            eps_max=float(eps_live.max()) if eps_live.size else 0.0,
            eps_mean=float(eps_live.mean()) if eps_live.size else 0.0,
            err_max=float(err_live.max()) if err_live.size else float("nan"),
            err_mean=float(err_live.mean()) if err_live.size else float("nan"),
        ))
    return Report(method=method, allocation=allocation, requested=int(requested),
                  achieved=int(sum(r["kept"] for r in rows)), total=network.n_weights,
                  total_biases=network.n_biases, n_points=n_points, delta=float(delta), C=float(C),
                  seconds=float(seconds), layers=rows)


def result_from_masks(network, X_S, masks, weights=None, *, method: str, allocation: str,
                      requested: int, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C,
                      seconds: float = 0.0) -> PruneResult:
    """A :class:`PruneResult` for masks chosen by another rule (baselines).

    ``weights`` (default: the original weights times the masks) may carry
    reweighted values. Side tables record kept counts and the deterministic bound
    ``C * pruned sensitivity mass`` so baselines are reported like SiPP.
    """
    s_list, n_points, heads = sensitivity_and_head(network, X_S, REPORT_POINTS)
    if weights is None:
        weights = [np.where(mk, layer.weight, 0).astype(layer.dtype) for mk, layer in zip(masks, network.layers)]
    tables = []
    for W, W_hat, s in zip([layer.weight for layer in network.layers], weights, s_list):
        nnz, mass = alloc.side_stats(W, s)
        kept_mask = W_hat != 0
        kept = alloc.side_sums(W, kept_mask)
        eps_d = np.where(kept >= nnz, 0.0, alloc.det_bound(W, s, kept_mask, mass, C))
        zeros = np.zeros_like(nnz)
        tables.append(SideTable(nnz=nnz, mass=mass, target=kept, kept=kept, sampled=zeros.astype(bool),
                                draws=zeros, dead=(nnz > 0) & (mass == 0), eps_det=eps_d,
                                eps_rand=np.asarray(eps_rand(np.maximum(kept, 1), mass, C, delta)) * (kept < nnz),
                                eps=eps_d))
    report = build_report(network, heads, weights, tables, method=method, allocation=allocation,
                          requested=requested, delta=delta, C=C, seconds=seconds, n_points=n_points)
    return PruneResult(network.with_weights(weights), [w != 0 for w in weights], report, s_list, tables)
