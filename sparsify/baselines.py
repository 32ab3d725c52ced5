"""Baseline pruning methods that share SiPP's allocation, accounting and report.

Each baseline is a **score** per weight plus an **allocation rule** that turns
scores and a budget B of kept weights into boolean masks:

================== ==================================== ===========================================
method             score of weight (i, j) of layer l    allocation
================== ==================================== ===========================================
magnitude-global   ``|W_ij|``                           global top-B over all layers ("weight
                                                        thresholding")
magnitude-layer    ``|W_ij|``                           every layer keeps the same fraction
                                                        (B split in proportion to layer size),
                                                        top scores within the layer
random             ``U(0, 1)`` drawn from ``rng``       global top-B (a uniformly random subset)
snip               ``|W_ij * dL/dW_ij|`` on ``(S, y_S)``  global top-B
wanda              ``|W_ij| * ||A_:j||_2`` on S          every row (output neuron) keeps the same
                                                        fraction, top scores within the row
undecayed          ``|-W_ij dL/dW_ij + lam W_ij^2|``    global top-B
                   on ``(S, y_S)``, lam = the training
                   weight decay
================== ==================================== ===========================================

``A`` is the layer's input on S (``network.trace(X_S)``), ``L`` the mean
cross-entropy (:mod:`sparsify.train`). Ties go to the lower (layer, flat
index). Only nonzero weights are eligible, so pruning an already pruned
network (the iterative cascade) never revives a weight. Kept weights keep
their values (no reweighting). :func:`prune_baseline` hits the requested
kept count exactly and returns the same :class:`~sparsify.prune.PruneResult`
and report as :func:`sparsify.prune`.
"""
from __future__ import annotations

import time

import numpy as np

from ._validation import check_choice, check_keep_budget, check_rng, check_scalar
from .allocation import global_top_b
from .network import Network

#: baseline name -> (score function key, allocation rule named in the report).
METHODS = {
    "magnitude-global": "global",
    "magnitude-layer": "layer",
    "random": "global",
    "snip": "global",
    "wanda": "row",
    "undecayed": "global",
}

#: weight decay the undecayed score assumes when none is given (the training default of
#: :func:`sparsify.train.train` and of the experiment).
DEFAULT_WEIGHT_DECAY = 5e-4


# --- scores ------------------------------------------------------------------------
def magnitude_scores(network: Network) -> list[np.ndarray]:
    """``|W|`` for every layer."""
    return [np.abs(w).astype(np.float64) for w in network.weights]


def random_scores(network: Network, rng=None) -> list[np.ndarray]:
    """Independent ``U(0, 1)`` scores (a uniformly random ranking), drawn layer by layer."""
    gen = check_rng(rng)
    return [gen.random(w.shape) for w in network.weights]


def snip_scores(network: Network, X_S, y_S) -> list[np.ndarray]:
    """SNIP's connection sensitivity ``|W * dL/dW|`` on the labelled batch ``(X_S, y_S)``.

    ``L`` is the mean cross-entropy; the gradient comes from the same backprop
    that training uses (:func:`sparsify.train.loss_and_gradients`).
    """
    from .train import loss_and_gradients

    if y_S is None:
        raise ValueError("y_S: the snip baseline needs the labels of S (y_S=...) to compute dL/dW.")
    _, grads, _ = loss_and_gradients(network, X_S, y_S)
    return [np.abs(w.astype(np.float64) * g) for w, g in zip(network.weights, grads)]


def wanda_scores(network: Network, X_S) -> list[np.ndarray]:
    """``|W_ij| * ||A_:j||_2``: weight magnitude times the norm of its input over S."""
    inputs = network.trace(X_S)
    return [
        np.abs(w).astype(np.float64) * np.linalg.norm(a.astype(np.float64), axis=0)[None, :]
        for w, a in zip(network.weights, inputs)
    ]


def undecayed_scores(network: Network, X_S, y_S, weight_decay: float = DEFAULT_WEIGHT_DECAY) -> list[np.ndarray]:
    """The undecayed-pruning score ``|-W * dL/dW + weight_decay * W**2|`` on ``(X_S, y_S)``.

    ``L`` is the mean cross-entropy of the data alone (no weight-decay term), its
    gradient from the training backprop (:func:`sparsify.train.loss_and_gradients`).
    ``-W * dL/dW`` is the first-order change of the data loss when the weight is
    set to zero; ``weight_decay * W**2`` is the weight-decay part kept separate.
    At a stationary point of the decayed objective (``dL/dW = -weight_decay * W``)
    the score is ``2 * weight_decay * W**2``, a magnitude score; away from it the
    data gradient counts, as in SNIP (see docs/experiment.md, "Undecayed pruning").
    """
    from .train import loss_and_gradients

    if y_S is None:
        raise ValueError("y_S: the undecayed baseline needs the labels of S (y_S=...) to compute dL/dW.")
    lam = check_scalar(weight_decay, "weight_decay", low=0.0)
    _, grads, _ = loss_and_gradients(network, X_S, y_S)
    out = []
    for w, g in zip(network.weights, grads):
        w = w.astype(np.float64)
        out.append(np.abs(-w * g + lam * w * w))
    return out


def scores(network: Network, method: str, X_S=None, y_S=None, rng=None,
           weight_decay: float = DEFAULT_WEIGHT_DECAY) -> list[np.ndarray]:
    """The score arrays of baseline ``method`` (one per layer, shaped like the weights)."""
    check_choice(method, "method", METHODS)
    if method == "undecayed":
        return undecayed_scores(network, X_S, y_S, weight_decay)
    if method in ("magnitude-global", "magnitude-layer"):
        return magnitude_scores(network)
    if method == "random":
        return random_scores(network, rng)
    if method == "snip":
        return snip_scores(network, X_S, y_S)
    return wanda_scores(network, X_S)


# --- allocation rules ----------------------------------------------------------------
def split_budget(budget: int, sizes, caps=None) -> np.ndarray:
    """Split ``budget`` over groups in proportion to ``sizes``, at most ``caps[g]`` each.

    Largest-remainder rounding (ties to the lower group) makes the parts sum to
    ``min(budget, sum(caps))`` exactly; what a capped group cannot take is
    passed on to the others in proportion to their sizes.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    caps = sizes.astype(np.int64) if caps is None else np.asarray(caps, dtype=np.int64)
    budget = int(min(budget, caps.sum()))
    out = np.zeros(sizes.size, dtype=np.int64)
    open_ = caps > 0
    while budget - out.sum() > 0 and open_.any():
        left = budget - int(out.sum())
        share = np.where(open_, sizes, 0.0)
        if share.sum() == 0:
            share = open_.astype(np.float64)
        ideal = left * share / share.sum()
        part = np.floor(ideal).astype(np.int64)
        rest = left - int(part.sum())
        order = np.argsort(-(ideal - part), kind="stable")
        part[order[:rest]] += 1
        part = np.minimum(part, caps - out)
        out += part
        open_ = out < caps
    return out


def _layer_masks(scores_, eligible, budget: int) -> list[np.ndarray]:
    """Every layer keeps the same fraction of its weights (top scores within the layer)."""
    caps = [int(e.sum()) for e in eligible]
    parts = split_budget(budget, [s.size for s in scores_], caps)
    return [global_top_b([s], int(b), [e])[0] for s, e, b in zip(scores_, eligible, parts)]


def _row_masks(scores_, eligible, budget: int) -> list[np.ndarray]:
    """Every row keeps the same fraction: layer budgets as in "layer", then split evenly over rows."""
    caps = [int(e.sum()) for e in eligible]
    parts = split_budget(budget, [s.size for s in scores_], caps)
    masks = []
    for s, e, b in zip(scores_, eligible, parts):
        row_parts = split_budget(int(b), np.full(s.shape[0], s.shape[1]), e.sum(axis=1))
        key = np.where(e, s, -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")      # best first, ties to the lower column
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :].repeat(s.shape[0], 0), axis=1)
        masks.append((rank < row_parts[:, None]) & e)
    return masks


def baseline_masks(network: Network, X_S=None, *, keep=None, budget=None, method: str = "magnitude-global",
                   y_S=None, rng=None, weight_decay: float = DEFAULT_WEIGHT_DECAY) -> list[np.ndarray]:
    """Boolean keep-masks of baseline ``method`` at the requested size (see module docs)."""
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    check_choice(method, "method", METHODS)
    if method in ("snip", "wanda", "undecayed") and X_S is None:
        raise ValueError(f"X_S: the {method} baseline is data-aware; pass the batch S (X_S=...).")
    B = check_keep_budget(keep, budget, network.n_weights)
    sc = scores(network, method, X_S, y_S, rng, weight_decay)
    eligible = [np.asarray(w) != 0 for w in network.weights]
    rule = METHODS[method]
    if rule == "global":
        return global_top_b(sc, B, eligible)
    if rule == "layer":
        return _layer_masks(sc, eligible, B)
    return _row_masks(sc, eligible, B)


def prune_baseline(network: Network, X_S=None, keep=None, budget=None, method: str = "magnitude-global",
                   y_S=None, rng=None, weight_decay: float = DEFAULT_WEIGHT_DECAY):
    """Prune ``network`` with a baseline and report it like :func:`sparsify.prune`.

    Parameters
    ----------
    network : Network
    X_S : array (n_points, n_in); scored by "snip" and "wanda", and used by
        the report of every method to measure the pre-activation error on S.
    keep, budget : exactly one: fraction of prunable weights to keep, or a count.
    method : "magnitude-global" | "magnitude-layer" | "random" | "snip" | "wanda" | "undecayed".
    y_S : int labels of S (needed by "snip" and "undecayed").
    rng : seed or Generator (used by "random").
    weight_decay : the training weight decay lambda of the "undecayed" score (ignored by the others).

    Returns
    -------
    PruneResult with ``network`` (masked weights, biases unchanged), ``masks``
    and ``report`` (allocation named "global", "layer" or "row").
    """
    from .prune import result_from_masks

    if X_S is None:
        raise ValueError(
            "X_S: prune_baseline needs the batch S (X_S=...) for the report, which measures each side's "
            "pre-activation error on S like sparsify.prune does; use baseline_masks() for masks alone."
        )
    t0 = time.perf_counter()
    masks = baseline_masks(network, X_S, keep=keep, budget=budget, method=method, y_S=y_S, rng=rng,
                           weight_decay=weight_decay)
    B = check_keep_budget(keep, budget, network.n_weights)
    return result_from_masks(network, X_S, masks, method=method, allocation=METHODS[method], requested=B,
                             seconds=time.perf_counter() - t0)
