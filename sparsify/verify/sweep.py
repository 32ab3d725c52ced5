"""The sweep behind ``sparsify verify --plot``: measured error and claimed bound against kept weights.

Each (method, keep) pruning is independent, so with ``dask`` it is one task
(:mod:`sparsify.distributed`); the rows are put back in order, so the result
does not depend on where they ran.
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Callable, Sequence

import numpy as np

from ..bounds import DEFAULT_C, DEFAULT_DELTA
from ..prune import METHODS, prune
from .check import CHECK_RTOL, _check_points, _input_rows, side_check

__all__ = ["sweep"]


def sweep(network, X_S, keeps: Sequence[float], methods: Sequence[str] = METHODS, *,
          seed: int = 0, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C, patch_reduction: str | None = None,
          progress: Callable[[int, int], None] | None = None, dask=None) -> dict:
    """Measured in-sample error and claimed bound per layer against kept weights, for each method.

    Returns ``{method: {"kept": (n_keeps, n_layers), "bound": ..., "measured": ...}}``
    where ``bound`` is the median claimed ``eps`` over the pruned sides of a layer and
    ``measured`` the median over the same sides of the largest relative error on S.
    With ``dask`` (as in :func:`verify`) each (method, keep) pruning is a task; same result.
    """
    X_S = _check_points(network, X_S, "X_S")
    if dask is not None:
        from ..distributed import check_dask

        check_dask(dask)
    A_S = _input_rows(network, network.trace(X_S))
    views = [layer.weight_matrix for layer in network.prunable_layers]
    shared = (network, X_S, A_S, views, dict(seed=seed, delta=delta, C=C, rtol=CHECK_RTOL[network.dtype],
                                            patch_reduction=patch_reduction))
    points = [(method, float(keep)) for method in methods for keep in keeps]
    rows = []
    with ExitStack() as stack:
        if dask is None:
            results = (_sweep_point(shared, point) for point in points)
        else:
            from ..distributed import connect, run_ordered

            client = stack.enter_context(connect(dask))
            results = run_ordered(client, _sweep_point, shared, points, name="sparsify-sweep", progress=progress)
        for done, row in enumerate(results, 1):
            rows.append(row)
            if progress is not None and dask is None:
                progress(done, len(points))
    out = {}
    for m, method in enumerate(methods):
        block = rows[m * len(keeps):(m + 1) * len(keeps)]
        out[method] = {key: np.array([row[key] for row in block]).reshape(len(keeps), len(views))
                       for key in ("kept", "bound", "measured")}
    return out


def _sweep_point(shared, point) -> dict:
    """One pruning of :func:`sweep`: per layer the kept count, the median bound and the median error."""
    network, X_S, A_S, views, opts = shared
    method, keep = point
    n = len(views)
    kept, bnd, meas = np.zeros(n), np.full(n, np.nan), np.full(n, np.nan)
    res = prune(network, X_S, keep=keep, method=method, rng=opts["seed"], delta=opts["delta"], C=opts["C"],
                patch_reduction=opts["patch_reduction"])
    for k, tab in enumerate(res.sides):
        W_hat = res.network.prunable_layers[k].weight_matrix
        kept[k] = np.count_nonzero(W_hat)
        pruned = (tab.nnz > 0) & ~tab.dead & (tab.kept < tab.nnz)
        if pruned.any():
            _, errors, _ = side_check(A_S[k], views[k], W_hat, tab.eps, opts["rtol"])
            bnd[k] = np.median(tab.eps[pruned])
            meas[k] = np.median(errors[pruned])
    return dict(kept=kept, bound=bnd, measured=meas)
