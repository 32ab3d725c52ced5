"""N:M semi-structured selection: at most N kept weights in every group of M consecutive inputs.

A row of a layer's weight-matrix view ``W`` (n_out, n_in) is cut into groups of
M consecutive columns ``[0, M), [M, 2M), ...``; in each group the N entries
with the largest *score* are kept (ties to the lower index), the others are
pruned. Any score works: SiPP's sensitivities (then the kept set of a side is
constrained, and the deterministic bound of docs/theory.md S6 is unchanged in
form: ``C`` times the sensitivity mass of what was dropped), ``|W|``, Wanda's
``|W| ||A_:j||``, ... A pattern fixes the kept fraction to N/M (less where a
group holds fewer than N eligible weights), so it replaces the budget and the
allocation rule of docs/theory.md S10.

For a conv layer the groups run along the flattened ``c_in*kh*kw`` axis of
its weight-matrix view (docs/theory.md S15); M must divide that length.
"""
from __future__ import annotations

import numbers
import re

import numpy as np

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_pattern(pattern) -> tuple[int, int]:
    """``"2:4"`` (or a pair ``(2, 4)``) → ``(N, M)`` with ``1 <= N < M``.

    Raises TypeError for anything but a string or a pair of integers and
    ValueError for a malformed string or ``N >= M``.
    """
    if isinstance(pattern, str):
        match = _PATTERN.match(pattern)
        if match is None:
            raise ValueError(f"pattern: expected 'N:M' with integers N < M (e.g. '2:4'), got {pattern!r}.")
        n, m = int(match.group(1)), int(match.group(2))
    elif (isinstance(pattern, (tuple, list)) and len(pattern) == 2
          and all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in pattern)):
        n, m = int(pattern[0]), int(pattern[1])
    else:
        raise TypeError(f"pattern: expected a string 'N:M' (e.g. '2:4') or a pair (N, M), got {pattern!r}.")
    if n < 1 or m < 2 or n >= m:
        raise ValueError(
            f"pattern: needs 1 <= N < M (keep N of every M consecutive inputs), got N={n}, M={m}; "
            "e.g. '2:4' or '4:8'."
        )
    return n, m


def check_pattern_fits(network, n: int, m: int) -> None:
    """Raise ValueError naming the first layer whose row length M does not divide."""
    for k, layer in enumerate(network.prunable_layers):  # a convolution's rows: c_in*kh*kw (flattened kernel)
        width = int(np.prod(layer.weight.shape[1:]))
        if width % m:
            raise ValueError(
                f"pattern: {n}:{m} needs M={m} to divide the row length of every layer, but layer {k} "
                f"(weight shape {layer.weight.shape}) has rows of {width} inputs; pick an M that divides "
                f"{width} or leave the pattern out."
            )


def nm_mask(scores: np.ndarray, n: int, m: int, eligible: np.ndarray | None = None, *,
            layer: int | str = "") -> np.ndarray:
    """Keep the top-``n`` ``scores`` in every group of ``m`` consecutive entries of a row.

    Parameters
    ----------
    scores : array (n_out, n_in) or any array whose trailing axes flatten to n_in
    n, m : int
        From :func:`parse_pattern`; ``m`` must divide ``n_in``.
    eligible : bool array like ``scores``, optional
        Only eligible entries can be kept (pruned weights stay pruned); a group
        with fewer than ``n`` eligible entries keeps all of them.
    layer : label used in the error message.

    Returns
    -------
    bool array shaped like ``scores``: True = kept. Ties go to the lower index.
    """
    s = np.asarray(scores, dtype=np.float64)
    shape = s.shape
    s = s.reshape(shape[0], -1)
    width = s.shape[1]
    if width % m:
        raise ValueError(f"pattern: M={m} does not divide the row length {width} of layer {layer} "
                         f"(weight shape {shape}).")
    e = np.ones(s.shape, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool).reshape(s.shape)
    groups = s.reshape(s.shape[0], width // m, m)
    key = np.where(e.reshape(groups.shape), groups, -np.inf)
    order = np.argsort(-key, axis=2, kind="stable")        # best first, ties to the lower index
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(m), order.shape), axis=2)
    keep = (rank < n) & e.reshape(groups.shape)
    return keep.reshape(shape)


def pattern_masks(score_list, weights, pattern) -> list[np.ndarray]:
    """One :func:`nm_mask` per layer; only nonzero weights are eligible."""
    n, m = parse_pattern(pattern)
    out = []
    for k, (s, w) in enumerate(zip(score_list, weights)):
        w = np.asarray(w)
        view = (w.shape[0], -1)  # a convolution's groups run along its flattened kernel (c, i, j)
        out.append(nm_mask(np.reshape(s, view), n, m, w.reshape(view) != 0, layer=k).reshape(w.shape))
    return out


def prune_sipp_pattern(network, X_S, pattern, *, method: str, delta: float, C: float):
    """SiPP with an N:M pattern: keep the top-N sensitivities of each group (docs/theory.md S6).

    Only the deterministic rule fits a pattern (sampling cannot promise N per
    group), so ``method`` must be ``"det"``. The report's side bounds are
    ``C * sum of the sensitivities dropped`` (as for any deterministic mask).
    """
    from .prune import result_from_masks
    from .sensitivity import sensitivity

    if method != "det":
        raise ValueError(
            f"method: an N:M pattern keeps the top-N sensitivities of each group, which is the "
            f"deterministic rule; pass method='det' (got {method!r})."
        )
    n, m = parse_pattern(pattern)
    check_pattern_fits(network, n, m)
    s_list = sensitivity(network, X_S)
    masks = pattern_masks(s_list, network.weights, (n, m))
    kept = int(sum(mk.sum() for mk in masks))
    return result_from_masks(network, X_S, masks, method="det", allocation=f"pattern {n}:{m}", requested=kept,
                             delta=delta, C=C)


def prune_baseline_pattern(network, X_S, pattern, *, method: str, y_S=None, rng=None):
    """A baseline with an N:M pattern: top-N of the method's scores in each group."""
    from .baselines import scores
    from .prune import result_from_masks

    n, m = parse_pattern(pattern)
    check_pattern_fits(network, n, m)
    masks = pattern_masks(scores(network, method, X_S, y_S, rng), network.weights, (n, m))
    kept = int(sum(mk.sum() for mk in masks))
    return result_from_masks(network, X_S, masks, method=method, allocation=f"pattern {n}:{m}", requested=kept)
