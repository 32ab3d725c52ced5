"""The steps of :func:`sparsify.prune` one at a time, for ports that check each step.

A port of SiPP to another framework proves equality step by step: sensitivities,
then per-side integer targets, then the deterministic and sampled sides. Each
function here runs exactly the code ``prune`` runs for that step (no second
implementation), so feeding a port's intermediate arrays into the next step
isolates the first step that disagrees. ``sparsify.testing.golden`` ships fixed
cases of every step.

* :func:`side_targets` — per-layer sensitivities and a budget -> per-side integer
  targets ``m`` for the "global" or "balanced" rule (docs/theory.md S10);
* :func:`side_arrays` — one side ``(i, sign)`` of a weight matrix -> its weight
  indices, weights and sensitivities, in index order (docs/theory.md S6);
* :func:`uniform_stream` — the uniforms ``prune`` hands each sampled side, from
  the seed and the draw counts (docs/theory.md S7, S11);
* :func:`prune_given_sensitivities` — the whole selection (targets, top-m,
  sampling, reweighting) from given sensitivities, as ``prune`` does after its
  sensitivity step.

Side conventions as in :mod:`sparsify.prune`: tables have shape ``(n_out, 2)``,
column 0 the positive side (``w > 0``), column 1 the negative side (``w < 0``);
flat side order runs over layers, then neurons, then the two columns.
"""
from __future__ import annotations

import numpy as np

from . import allocation as alloc
from ._blas import single_threaded_blas
from ._validation import check_choice, check_rng, check_scalar
from .bounds import DEFAULT_C, DEFAULT_DELTA, patch_sizes
from .network import Network

__all__ = ["prune_given_sensitivities", "side_arrays", "side_targets", "uniform_stream"]


def _check_network(network) -> None:
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")


def _matrices(network, sensitivities) -> tuple[list, list]:
    """Weight-matrix views and the sensitivities reshaped like them (validated)."""
    weights = [layer.weight_matrix for layer in network.prunable_layers]
    if not isinstance(sensitivities, (list, tuple)):
        raise TypeError(f"sensitivities: expected a list with one array per prunable layer, got "
                        f"{type(sensitivities).__name__}; pass the list sparsify.sensitivity(network, X_S) returns.")
    if len(sensitivities) != len(weights):
        raise ValueError(f"sensitivities: expected one array per prunable layer ({len(weights)}), got "
                         f"{len(sensitivities)}; pass the list sparsify.sensitivity(network, X_S) returns.")
    s_mats = []
    for k, (s, W, layer) in enumerate(zip(sensitivities, weights, network.prunable_layers)):
        s = np.asarray(s)
        if s.size != W.size or s.shape not in (W.shape, layer.weight.shape):
            raise ValueError(f"sensitivities[{k}]: expected shape {layer.weight.shape} (or {W.shape}), got {s.shape}.")
        if s.dtype != W.dtype:
            raise ValueError(f"sensitivities[{k}]: expected dtype {W.dtype} (the layer's), got {s.dtype}; "
                             "prune computes sensitivities in the network's dtype.")
        if not np.all((s >= 0) & (s <= 1)):
            raise ValueError(f"sensitivities[{k}]: every value must lie in [0, 1] (docs/theory.md S5).")
        s_mats.append(np.ascontiguousarray(s.reshape(W.shape)))
    return weights, s_mats


def _budget(network, budget) -> int:
    total = sum(W.size for W in (layer.weight_matrix for layer in network.prunable_layers))
    return check_scalar(budget, f"budget (weights kept over all prunable layers, 1..{total})", kind="int",
                        low=1, high=total)


def _plan(network, s_mats, weights, C, delta):
    from .prune import _Plan  # the bookkeeping prune itself uses

    return _Plan(weights, s_mats, C, delta, patch_sizes(network))


def side_targets(network, sensitivities, budget: int, allocation: str = "balanced", *,
                 C: float = DEFAULT_C, delta: float = DEFAULT_DELTA) -> list[np.ndarray]:
    """Per-side integer targets ``m`` of every prunable layer for one budget.

    Parameters
    ----------
    network : sparsify.Network
    sensitivities : list of arrays
        ``s`` per prunable layer, shaped like its weight (or its weight-matrix
        view) and of its dtype, e.g. ``sparsify.sensitivity(network, X_S)``.
    budget : int
        Weights to keep over all prunable layers (``prune``'s ``keep`` times
        the weight count, rounded as ``PruneResult.report.requested``).
    allocation : {"global", "balanced"}
        The rule (docs/theory.md S10): top-``budget`` sensitivities, or the
        convex program over ``eps_rand`` solved by bisection on ``lambda``.
    C, delta : float
        The constants of the bounds (``alpha`` enters the balanced rule).

    Returns
    -------
    list of int64 arrays, shape (n_out, 2) per layer
        ``m`` per side, as ``PruneResult.sides[k].target`` when every layer is
        pruned with one budget; they sum to ``budget`` (capped at the number of
        nonzero weights).
    """
    _check_network(network)
    check_choice(allocation, "allocation", alloc.ALLOCATIONS)
    weights, s_mats = _matrices(network, sensitivities)
    budget = _budget(network, budget)
    plan = _plan(network, s_mats, weights, C, delta)
    m = plan.targets(allocation, int(min(budget, plan.nnz.sum())))
    return [m[plan.offsets[k]:plan.offsets[k + 1]].reshape(W.shape[0], 2) for k, W in enumerate(weights)]


def side_arrays(W, s, i: int, sign: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One side of neuron ``i``: its weight indices, weights and sensitivities.

    Parameters
    ----------
    W, s : arrays of one shape
        A layer's weight and its sensitivities; a 4-D convolution weight is
        taken as its weight-matrix view ``(c_out, c_in*kh*kw)``.
    i : int
        The neuron (row of the weight-matrix view).
    sign : {+1, -1}
        The positive side (``w > 0``) or the negative side (``w < 0``); zero
        weights belong to no side.

    Returns
    -------
    idx, w, s_side : arrays
        ``idx`` the column indices ``j`` of the side in increasing order (the
        order in which the sampler accumulates ``s`` and in which top-m breaks
        ties), ``w = W[i, idx]`` and ``s_side = s[i, idx]``.
    """
    W = np.asarray(W)
    s = np.asarray(s)
    if W.ndim < 2 or s.shape != W.shape:
        raise ValueError(f"W, s: expected two arrays of one shape with at least 2 dimensions, got {W.shape} "
                         f"and {s.shape}.")
    W2, s2 = W.reshape(W.shape[0], -1), s.reshape(W.shape[0], -1)
    i = check_scalar(i, f"i (a row of W, 0..{W2.shape[0] - 1})", kind="int", low=0, high=W2.shape[0] - 1)
    if isinstance(sign, (bool, np.bool_)) or sign not in (1, -1):
        raise ValueError(f"sign: must be +1 (the side w > 0) or -1 (the side w < 0), got {sign!r}.")
    idx = np.flatnonzero(W2[i] > 0) if sign > 0 else np.flatnonzero(W2[i] < 0)
    return idx, W2[i, idx], s2[i, idx]


def uniform_stream(rng, draws) -> dict:
    """The uniforms ``prune`` hands each sampled side, keyed by ``(layer, i, sign)``.

    ``prune`` normalises ``rng`` once and then uses it only for sampling: it
    draws ``rng.random(n)`` chunk by chunk and gives the sides their slices in
    flat side order (layer, neuron, positive then negative side). A Generator's
    doubles concatenate (``random(a)`` then ``random(b)`` equals ``random(a + b)``),
    so the whole stream is ``rng.random(total draws)`` cut at the draw counts.

    Parameters
    ----------
    rng : int, Generator or None
        What was passed to ``prune`` (a fresh Generator for an int seed; a
        Generator is advanced, as ``prune`` would advance it).
    draws : list of int arrays, shape (n_out, 2) per layer
        The draw counts ``N`` per side, ``PruneResult.sides[k].draws`` (0 for a
        side that is not sampled).

    Returns
    -------
    dict
        ``{(layer, i, sign): u}`` for every side with ``N > 0``, in consumption
        order, ``u`` a float64 array of length ``N``; feed ``u`` to
        ``sparsify.reference.sparsify_side_rand`` with that side's arrays from
        :func:`side_arrays`.
    """
    gen = check_rng(rng)
    if not isinstance(draws, (list, tuple)):
        raise TypeError(f"draws: expected a list of (n_out, 2) arrays, one per layer, got {type(draws).__name__}.")
    keys, counts = [], []
    for k, d in enumerate(draws):
        d = np.asarray(d)
        if d.ndim != 2 or d.shape[1] != 2 or d.dtype.kind not in "iu" or np.any(d < 0):
            raise ValueError(f"draws[{k}]: expected nonnegative integers of shape (n_out, 2), got "
                             f"{d.dtype} of shape {d.shape}.")
        for i, col in zip(*np.nonzero(d)):
            keys.append((k, int(i), 1 if col == 0 else -1))
            counts.append(int(d[i, col]))
    u = gen.random(int(sum(counts)))
    cuts = np.cumsum([0] + counts)
    return {key: u[a:b] for key, a, b in zip(keys, cuts[:-1], cuts[1:])}


def prune_given_sensitivities(network, sensitivities, budget: int, method: str = "hybrid",
                              allocation: str | None = None, rng=None, *, C: float = DEFAULT_C,
                              delta: float = DEFAULT_DELTA) -> tuple[list, list]:
    """Everything :func:`sparsify.prune` does after its sensitivity step, from given ``s``.

    One budget over all prunable layers (``prune`` with one ``keep`` and no
    ``layers``/``exclude``). With ``sensitivities = prune(...).sensitivities``
    and the same ``rng`` the result equals ``prune``'s bit for bit; with a
    port's sensitivities it shows what the rest of the pipeline makes of them.

    Returns
    -------
    weights : list of arrays
        The pruned (sampled sides reweighted) weights, shaped like each layer's weight.
    sides : list of :class:`sparsify.SideTable`
        Targets, kept counts, draw counts, flags and bounds per side.
    """
    from .prune import check_options

    _check_network(network)
    allocation, delta, C = check_options(method, allocation, delta, C)
    weights, s_mats = _matrices(network, sensitivities)
    budget = _budget(network, budget)
    gen = check_rng(rng)
    with single_threaded_blas():
        out, tables = _plan(network, s_mats, weights, C, delta).run(method, allocation, budget, gen)
    return [w.reshape(layer.weight.shape) for w, layer in zip(out, network.prunable_layers)], tables
