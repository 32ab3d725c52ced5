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

``A`` is the layer's input matrix on S (``network.trace(X_S)``; for a
convolution its patch matrix, rows (x, p), and a "row" of the allocation is an
output channel of the weight-matrix view), ``L`` the mean
cross-entropy (:mod:`sparsify.train`). S may be one array, a list of 2-D
batches or a generator of them, as for :func:`sparsify.prune`; batches are
read once, one at a time (for "snip", ``y_S`` is then the matching sequence
of label batches). Ties go to the lower (layer, flat
index). Only nonzero weights are eligible, so pruning an already pruned
network (the iterative cascade) never revives a weight. Kept weights keep
their values (no reweighting). :func:`prune_baseline` hits the requested
kept count exactly and returns the same :class:`~sparsify.prune.PruneResult`
and report as :func:`sparsify.prune`.
"""
from __future__ import annotations

import time

import numpy as np

from ._selection import select_layers
from ._validation import check_choice, check_rng, check_scalar
from .allocation import global_top_b
from .network import Network
from ._streaming import is_one_array

__all__ = ["METHODS", "baseline_masks", "magnitude_scores", "prune_baseline", "random_scores", "scores",
           "snip_scores", "split_budget", "undecayed_scores", "wanda_scores"]

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
    that training uses (:func:`sparsify.train.loss_and_gradients`). With S as
    batches, ``y_S`` holds the matching label batches and the gradient is the
    point-weighted mean of the batch gradients.
    """
    from .train import loss_and_gradients

    if y_S is None:
        raise ValueError("y_S: the snip baseline needs the labels of S (y_S=...) to compute dL/dW.")
    if is_one_array(X_S, len(network.input_shape)):
        _, grads, _ = loss_and_gradients(network, X_S, y_S)
        return [np.abs(w.astype(np.float64) * g) for w, g in zip(network.weights, grads)]
    add, finish = _snip_accumulator(network, y_S)
    for k, X in enumerate(X_S):
        add(k, network.check_input(X, f"X_S batch {k}"))
    return finish()


def _snip_accumulator(network, y_S):
    """``(add(k, X), finish())``: sum ``n_b * grad_b`` batch by batch, then SNIP's scores."""

    if y_S is None:
        raise ValueError("y_S: the snip baseline needs the labels of S (y_S=...) to compute dL/dW.")
    if isinstance(y_S, np.ndarray) and y_S.ndim == 1:
        raise ValueError("y_S: with S given as batches, give the labels as the matching batches "
                         "(a list or generator of label arrays, one per batch of X_S).")
    labels = iter(y_S)
    state = {"grads": None, "n": 0}

    def add(k, X):
        y = next(labels, None)
        if y is None:
            raise ValueError(f"y_S: has fewer label batches than X_S has batches (none for batch {k}).")
        if X.shape[0] == 0:
            return
        from .train import loss_and_gradients

        _, g, _ = loss_and_gradients(network, X, y)
        n_b = X.shape[0]
        old = state["grads"]
        state["grads"] = [gi * n_b for gi in g] if old is None else [a + gi * n_b for a, gi in zip(old, g)]
        state["n"] += n_b

    def finish():
        if state["grads"] is None:
            raise ValueError("X_S: the batch S is empty; snip needs at least one labelled point.")
        return [np.abs(w.astype(np.float64) * (g / state["n"])) for w, g in zip(network.weights, state["grads"])]

    return add, finish


def wanda_scores(network: Network, X_S) -> list[np.ndarray]:
    """``|W_ij| * ||A_:j||_2``: weight magnitude times the norm of its input over S.

    For a convolution ``W`` is the weight-matrix view and ``A`` its patch matrix:
    the norm runs over every (point, patch) row of S (docs/theory.md S15), summed
    block by block so the patches of S never exist at once. Scores are shaped like
    the weights. S given as batches is read once, one batch at a time (the squared
    norms are summed over batches, so memory does not grow with |S|).
    """
    add, finish = _wanda_accumulator(network)
    batches = [X_S] if is_one_array(X_S, len(network.input_shape)) else X_S
    for k, X in enumerate(batches):
        add(k, network.check_input(X, "X_S" if is_one_array(X_S, len(network.input_shape)) else f"X_S batch {k}"))
    return finish()


def _input_square_sums(layer, a: np.ndarray) -> np.ndarray:
    """Squared norm of each column of ``layer``'s input matrix at input ``a`` (float64)."""
    if layer.kind == "conv2d":
        from ._patches import column_square_sums

        return column_square_sums(a, layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    return np.einsum("ij,ij->j", a, a, dtype=np.float64)


def _wanda_accumulator(network):
    """``(add(k, X), finish())``: squared input norms summed batch by batch, then wanda's scores."""
    layers = network.prunable_layers
    squares = [np.zeros(layer.weight_matrix.shape[1]) for layer in layers]

    def add(k, X):
        for sq, layer, a in zip(squares, layers, network.trace(X)):
            sq += _input_square_sums(layer, a)

    def finish():
        return [(np.abs(layer.weight_matrix).astype(np.float64) * np.sqrt(sq)[None, :]).reshape(layer.weight.shape)
                for layer, sq in zip(layers, squares)]

    return add, finish


def undecayed_scores(network: Network, X_S, y_S, weight_decay: float = DEFAULT_WEIGHT_DECAY) -> list[np.ndarray]:
    """The undecayed-pruning score ``|-W * dL/dW + weight_decay * W**2|`` on ``(X_S, y_S)``.

    ``L`` is the mean cross-entropy of the data alone (no weight-decay term), its
    gradient from the training backprop (:func:`sparsify.train.loss_and_gradients`;
    with S as batches, the point-weighted mean of the batch gradients, as for SNIP).
    ``-W * dL/dW`` is the first-order change of the data loss when the weight is
    set to zero; ``weight_decay * W**2`` is the weight-decay part kept separate.
    At a stationary point of the decayed objective (``dL/dW = -weight_decay * W``)
    the score is ``2 * weight_decay * W**2``, a magnitude score; away from it the
    data gradient counts, as in SNIP (see docs/experiment.md, "Undecayed pruning").
    """
    one_array = is_one_array(X_S, len(network.input_shape))
    add, finish = _undecayed_accumulator(network, y_S, weight_decay, one_array=one_array)
    if one_array:
        add(0, X_S)
    else:
        for k, X in enumerate(X_S):
            add(k, network.check_input(X, f"X_S batch {k}"))
    return finish()


def _undecayed_accumulator(network, y_S, weight_decay, one_array: bool = False):
    """``(add(k, X), finish())``: the mean data-loss gradient batch by batch, then the undecayed scores."""
    from .train import loss_and_gradients

    if y_S is None:
        raise ValueError("y_S: the undecayed baseline needs the labels of S (y_S=...) to compute dL/dW.")
    lam = check_scalar(weight_decay, "weight_decay", low=0.0)
    if not one_array and isinstance(y_S, np.ndarray) and y_S.ndim == 1:
        raise ValueError("y_S: with S given as batches, give the labels as the matching batches "
                         "(a list or generator of label arrays, one per batch of X_S).")
    labels = iter([y_S]) if one_array else iter(y_S)
    state = {"grads": None, "n": 0}

    def add(k, X):
        y = next(labels, None)
        if y is None:
            raise ValueError(f"y_S: has fewer label batches than X_S has batches (none for batch {k}).")
        if np.shape(X)[0] == 0 and not one_array:
            return
        _, g, _ = loss_and_gradients(network, X, y)
        n_b = np.shape(X)[0]
        old = state["grads"]
        state["grads"] = [gi * n_b for gi in g] if old is None else [a + gi * n_b for a, gi in zip(old, g)]
        state["n"] += n_b

    def finish():
        if state["grads"] is None or state["n"] == 0:
            raise ValueError("X_S: the batch S is empty; undecayed needs at least one labelled point.")
        out = []
        for w, g in zip(network.weights, state["grads"]):
            w = w.astype(np.float64)
            out.append(np.abs(-w * (g / state["n"]) + lam * w * w))
        return out

    return add, finish


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
    for s_full, e_full, b in zip(scores_, eligible, parts):
        # rows of the weight-matrix view (a convolution's output channels)
        s, e = s_full.reshape(s_full.shape[0], -1), e_full.reshape(e_full.shape[0], -1)
        row_parts = split_budget(int(b), np.full(s.shape[0], s.shape[1]), e.sum(axis=1))
        key = np.where(e, s, -np.inf)
        order = np.argsort(-key, axis=1, kind="stable")      # best first, ties to the lower column
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :].repeat(s.shape[0], 0), axis=1)
        masks.append(((rank < row_parts[:, None]) & e).reshape(s_full.shape))
    return masks


def _group_masks(sc, network: Network, method: str, sel) -> list[np.ndarray]:
    """Masks of baseline ``method`` for scores ``sc``: each group of ``sel`` gets its budget
    under the method's rule; layers outside every group keep all their (nonzero) weights."""
    views = [layer.weight_matrix for layer in network.prunable_layers]  # rows = output neurons/channels
    sc = [np.reshape(s, w.shape) for s, w in zip(sc, views)]
    eligible = [w != 0 for w in views]
    masks = list(eligible)
    rule = METHODS[method]
    for group, B in sel.groups:
        g_sc, g_ok = [sc[k] for k in group], [eligible[k] for k in group]
        if rule == "global":
            got = global_top_b(g_sc, B, g_ok)
        elif rule == "layer":
            got = _layer_masks(g_sc, g_ok, B)
        else:
            got = _row_masks(g_sc, g_ok, B)
        for k, mk in zip(group, got):
            masks[k] = mk
    return [mk.reshape(layer.weight.shape) for mk, layer in zip(masks, network.prunable_layers)]


def _check_call(network, method, X_S):
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    check_choice(method, "method", METHODS)
    if method in ("snip", "wanda", "undecayed") and X_S is None:
        raise ValueError(f"X_S: the {method} baseline is data-aware; pass the batch S (X_S=...).")


def baseline_masks(network: Network, X_S=None, *, keep=None, budget=None, method: str = "magnitude-global",
                   y_S=None, rng=None, layers=None, exclude=None,
                   weight_decay: float = DEFAULT_WEIGHT_DECAY) -> list[np.ndarray]:
    """Boolean keep-masks of baseline ``method`` at the requested size (see module docs).

    ``keep`` (one fraction, one per layer, or ``{layer: fraction}``), ``budget``,
    ``layers`` and ``exclude`` work as in :func:`sparsify.prune`: a layer left
    dense keeps every nonzero weight; with per-layer fractions each layer gets
    its own budget under the method's rule.
    """
    _check_call(network, method, X_S)
    sel = select_layers(network, keep, budget, layers, exclude)
    return _group_masks(scores(network, method, X_S, y_S, rng, weight_decay), network, method, sel)


def prune_baseline(network: Network, X_S=None, keep=None, budget=None, method: str = "magnitude-global",
                   y_S=None, rng=None, *, layers=None, exclude=None, reconstruct: bool = False,
                   calibration=None, lam=None, pattern=None, weight_decay: float = DEFAULT_WEIGHT_DECAY):
    """Prune ``network`` with a baseline and report it like :func:`sparsify.prune`.

    Parameters
    ----------
    network : Network
    X_S : array (n_points, n_in), list of such batches, or a generator of them;
        scored by "snip" and "wanda", and used by the report of every method to
        measure the pre-activation error on S. A generator is read once.
    keep, budget : exactly one: fraction(s) of prunable weights to keep (one
        float, one per layer, or ``{layer: fraction}``), or a count.
    method : "magnitude-global" | "magnitude-layer" | "random" | "snip" | "wanda" | "undecayed".
    y_S : int labels of S (needed by "snip" and "undecayed"; label batches when S is batches).
    rng : seed or Generator (used by "random").
    layers, exclude : at most one: layers to prune, or layers left dense.
    reconstruct, calibration, lam, pattern : least-squares refit of the kept weights
        (:mod:`sparsify.reconstruct`) and N:M selection (:mod:`sparsify.patterns`), as in
        :func:`sparsify.prune`. ``method="obs"`` runs :func:`sparsify.obs.prune_obs`
        (``lam`` is then its damping).
    weight_decay : the training weight decay lambda of the "undecayed" score (ignored by the others;
        with reconstruct, calibration, lam or pattern the default lambda is used).

    Returns
    -------
    PruneResult with ``network`` (masked weights, biases unchanged), ``masks``
    and ``report`` (allocation named "global", "layer" or "row").
    """
    from .prune import result_from_masks
    from .report import REPORT_POINTS
    from .sensitivity import sensitivity_and_head

    if X_S is None:
        raise ValueError(
            "X_S: prune_baseline needs the batch S (X_S=...) for the report, which measures each side's "
            "pre-activation error on S like sparsify.prune does; use baseline_masks() for masks alone."
        )
    # --- OBS, N:M pattern and least-squares refit (sparsify.obs, .patterns, .reconstruct) ---
    if method == "obs" or reconstruct is not False or pattern is not None or calibration is not None \
            or lam is not None:
        from .reconstruct import baseline_with_options

        if layers is not None or exclude is not None:
            raise ValueError("layers/exclude: not supported together with method='obs', reconstruct, calibration, "
                             "lam or pattern yet; prune every layer, or refit separately with "
                             "sparsify.reconstruct.reconstruct.")
        if method != "obs":
            check_choice(method, "method", METHODS)
        return baseline_with_options(network, X_S, keep=keep, budget=budget, method=method, y_S=y_S, rng=rng,
                                     reconstruct=reconstruct, calibration=calibration, lam=lam, pattern=pattern)
    # --- end ---
    t0 = time.perf_counter()
    _check_call(network, method, X_S)
    sel = select_layers(network, keep, budget, layers, exclude)
    sens = None
    one_shot = not is_one_array(X_S, len(network.input_shape)) and iter(X_S) is X_S
    if one_shot and method in ("snip", "wanda", "undecayed"):
        # S can be read only once: score it while the report's sensitivity pass reads it
        add, finish = (_snip_accumulator(network, y_S) if method == "snip" else _wanda_accumulator(network)
                       if method == "wanda" else _undecayed_accumulator(network, y_S, weight_decay))

        def tapped():
            for k, X in enumerate(X_S):
                X = network.check_input(X, f"X_S batch {k}")
                add(k, X)
                yield X

        sens = sensitivity_and_head(network, tapped(), REPORT_POINTS)
        sc = finish()
    else:
        sc = scores(network, method, X_S, y_S, rng, weight_decay)
    masks = _group_masks(sc, network, method, sel)
    return result_from_masks(network, X_S, masks, method=method, allocation=METHODS[method],
                             requested=sel.requested, seconds=time.perf_counter() - t0, excluded=sel.excluded,
                             layer_keep=sel.layer_keep, sensitivities=sens)
