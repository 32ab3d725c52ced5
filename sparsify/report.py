"""The prune report: what was kept where, which bound was used, what error resulted.

:class:`Report` is plain data (lists of dicts and numbers), so it serialises to
JSON as is. :func:`build_report` assembles it; the measured-error columns come
from :func:`head_side_errors` (on the blocks of S the sensitivity step kept) or
:func:`side_errors` (on an array of points), readable twin
:func:`sparsify.reference.side_errors` (docs/theory.md S13).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import _blas
from ._blas import single_threaded_blas
from ._config import njit, prange
from .bounds import patch_sizes
from .reference import split_inputs
from .sensitivity import head_block, stack_sides, z_parts

__all__ = ["REPORT_POINTS", "Report", "build_report", "head_side_errors", "side_errors"]

#: points of S used for the measured-error columns of the report
REPORT_POINTS = 4096

#: printed under the table by :meth:`Report.format_table`
FOOTER = """\
columns: kept/total = weights kept / weights of the layer; +bias = the same counting biases (never
pruned); keep = kept/total; dead = sides with weights but no sensitivity on S (pruned whole);
sampled = sides importance-sampled and reweighted; det = sides thinned to their top-m sensitivities;
full = sides kept whole; eps = the bound each live side claims (eps_rand at its draw count when
sampled, eps_det = C x pruned sensitivity mass otherwise; a side kept whole has 0), max and mean over
live sides; eps > 1 means the bound says nothing about that side; err = measured relative error
|(|Z_hat| - |Z|)| / |Z| of each side's pre-activation on the first points of S (max over points,
then max / mean over sides; - when no side has Z != 0); dense = layer excluded from pruning."""


@dataclass
class Report:
    """Per-layer and overall accounting of one pruning run.

    ``layers`` holds one dict per layer with keys ``layer, shape, activation,
    kept, total, kept_with_bias, total_with_bias, keep, live_sides, dead_sides,
    sampled_sides, det_sides, full_sides, empty_sides, eps_max, eps_mean,
    err_max, err_mean``. ``eps_*`` summarise the bound the method claims per live
    side (eps_rand at the draw count for sampled sides, eps_det = C * pruned
    sensitivity mass otherwise); ``err_*`` the measured relative error
    ``|Z_hat - Z| / Z`` of each live side's pre-activation on S (max over the
    points, then max / mean over sides); ``excluded`` is True for a layer left
    dense. For a convolution ``shape`` is ``c_out x c_in x kh x kw`` and ``patches``
    its patches per point P (1 for a dense layer, whose ``shape`` is
    ``n_out x n_in``); kept counts are over the weight-matrix view
    ``c_out x (c_in*kh*kw)``. ``requested`` and ``achieved`` count the weights of the pruned layers
    (``pruned_total``); ``total`` counts every weight.
    """

    method: str
    allocation: str
    requested: int
    achieved: int
    total: int
    total_biases: int
    n_points: int
    delta: float
    C: float
    seconds: float
    layers: list = field(default_factory=list)
    #: layers left dense (every weight kept, outside the budget)
    excluded: list = field(default_factory=list)
    #: requested keep fraction per pruned layer when each layer had its own budget, else None
    layer_keep: dict | None = None

    @property
    def pruned_total(self) -> int:
        """Weights of the pruned (not excluded) layers: what the budget counts."""
        if not self.layers:  # a report built by hand without rows
            return self.total
        return int(sum(r["total"] for r in self.layers if not r.get("excluded", False)))
    #: non-empty after a least-squares refit (docs/theory.md S16): the eps/err columns of
    #: selection no longer apply; rows carry ``refit_err_before``/``refit_err_after`` instead
    refit: str = ""

    @property
    def keep_requested(self) -> float:
        return self.requested / self.pruned_total

    @property
    def keep_achieved(self) -> float:
        return self.achieved / self.pruned_total

    @property
    def dead_sides(self) -> int:
        return int(sum(row["dead_sides"] for row in self.layers))

    @property
    def sampled_sides(self) -> int:
        return int(sum(row["sampled_sides"] for row in self.layers))

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.refit:  # the key appears only for refitted networks
            out.pop("refit")
        out.update(
            keep_requested=self.keep_requested,
            keep_achieved=self.keep_achieved,
            kept_with_bias=int(sum(r["kept_with_bias"] for r in self.layers)),
            total_with_bias=self.total + self.total_biases,
            dead_sides=self.dead_sides,
            sampled_sides=self.sampled_sides,
            pruned_total=self.pruned_total,
        )
        return jsonable(out)

    def format_table(self) -> str:
        head = (
            f"method={self.method} allocation={self.allocation} |S|={self.n_points} "
            f"delta={self.delta:g} C={self.C:g}\n"
            f"kept {self.achieved}/{self.total} weights (requested {self.requested}: "
            f"keep {self.keep_requested:.4f}, achieved {self.keep_achieved:.4f}); "
            f"dead sides {self.dead_sides}; sampled sides {self.sampled_sides}; {self.seconds:.3f} s"
        )
        if self.excluded:
            head += (f"\nlayers {', '.join(map(str, self.excluded))} left dense (not pruned, outside the budget); "
                     f"keep counts the {self.pruned_total} weights of the pruned layers")
        if self.layer_keep:
            head += "\nper-layer keep: " + ", ".join(f"layer {k}: {v:g}" for k, v in self.layer_keep.items())
        cols = ["layer", "shape", "kept/total", "+bias", "keep", "dead", "sampled", "det", "full",
                "eps max", "eps mean", "err max", "err mean"]
        rows = []
        for r in self.layers:
            rows.append([
                str(r["layer"]) + (" dense" if r.get("excluded", False) else ""),
                r["shape"] + (f" P={r['patches']}" if r["shape"].count("x") == 3 else ""), f"{r['kept']}/{r['total']}",
                f"{r['kept_with_bias']}/{r['total_with_bias']}", f"{r['keep']:.4f}",
                str(r["dead_sides"]), str(r["sampled_sides"]), str(r["det_sides"]), str(r["full_sides"]),
                _num(r["eps_max"]), _num(r["eps_mean"]), _num(r["err_max"]), _num(r["err_mean"]),
            ])
        if self.refit:  # measured errors of the refit only (sparsify.reconstruct)
            head += f"\n{self.refit}"
            cols += ["refit err before", "after"]
            for row, r in zip(rows, self.layers):
                row += [_num(r.get("refit_err_before")), _num(r.get("refit_err_after"))]
        widths = [max(len(c), *(len(row[k]) for row in rows)) for k, c in enumerate(cols)]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        table = [head, line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
        return "\n".join(table + ["", FOOTER])

    def __str__(self) -> str:
        return self.format_table()


def _num(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.3g}"


def jsonable(obj):
    """``obj`` with NumPy scalars as Python numbers, NaN and inf as None (JSON has no NaN),
    tuples as lists and dict keys as strings, ready for ``json.dumps(..., allow_nan=False)``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return None if not np.isfinite(x) else x
    return obj


# --- measured error of each side ----------------------------------------------------
def side_errors(A: np.ndarray, W: np.ndarray, W_hat: np.ndarray) -> np.ndarray:
    """Measured relative error of each side's pre-activation, max over the points.

    ``A`` is sign-split; ``Z± = A @ W±.T`` with the sign parts of ``W_hat`` taken by
    the original weight's sign. Returns (n_out, 2) with NaN for sides whose ``Z``
    is 0 at every point. Readable twin: :func:`sparsify.reference.side_errors`;
    here ``A`` becomes one :class:`~sparsify.sensitivity.HeadBlock` (the layout
    of the sensitivity step) and :func:`head_side_errors` does the rest.
    """
    return head_side_errors([head_block(split_inputs(A), W)], W, W_hat)


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


def build_report(network, heads, new_weights, tables, *, method, allocation, requested, delta, C, seconds,
                 n_points: int, excluded=(), layer_keep=None) -> Report:
    """Assemble the :class:`Report` for pruned weights ``new_weights`` of ``network``.

    ``heads`` (per layer a list of :class:`~sparsify.sensitivity.HeadBlock`, or None)
    hold the first points of S, on which the measured errors are computed (see
    :func:`sparsify.sensitivity.sensitivity_and_head`); ``n_points`` is |S|;
    ``tables`` the :class:`~sparsify.prune.SideTable` of every layer; ``excluded``
    the layers left dense (outside the budget: ``achieved`` counts the others);
    ``layer_keep`` the requested fraction per layer when each had its own budget.
    """
    if heads is None:
        heads = [None] * len(network.prunable_layers)
    excluded = sorted(int(k) for k in excluded)
    rows = []
    sizes = patch_sizes(network)
    for k, (layer, W_hat, tab, head) in enumerate(zip(network.prunable_layers, new_weights, tables, heads)):
        W = layer.weight_matrix  # a convolution's (c_out, c_in*kh*kw) view
        W_hat = np.reshape(W_hat, W.shape)
        kept = int(np.count_nonzero(W_hat))
        nb = 0 if layer.bias is None else layer.bias.size
        live = (tab.nnz > 0) & ~tab.dead
        partial = live & (tab.kept < tab.nnz)
        errs = head_side_errors(head, W, W_hat) if head else np.full(tab.nnz.shape, np.nan)
        err_live = errs[live & ~np.isnan(errs)]
        eps_live = tab.eps[live]
        rows.append(dict(
            layer=k, shape="x".join(map(str, layer.weight.shape)), patches=int(sizes[k][0]),
            activation=layer.activation,
            kept=kept, total=int(W.size), kept_with_bias=kept + nb, total_with_bias=int(W.size) + nb,
            keep=kept / W.size, live_sides=int(live.sum()), dead_sides=int(tab.dead.sum()),
            sampled_sides=int(tab.sampled.sum()), det_sides=int((partial & ~tab.sampled).sum()),
            full_sides=int((live & (tab.kept >= tab.nnz)).sum()),
            empty_sides=int((live & (tab.kept == 0)).sum()),
            eps_max=float(eps_live.max()) if eps_live.size else 0.0,
            eps_mean=float(eps_live.mean()) if eps_live.size else 0.0,
            err_max=float(err_live.max()) if err_live.size else float("nan"),
            err_mean=float(err_live.mean()) if err_live.size else float("nan"),
            excluded=k in excluded,
        ))
    return Report(method=method, allocation=allocation, requested=int(requested),
                  achieved=int(sum(r["kept"] for r in rows if not r["excluded"])), total=network.n_weights,
                  total_biases=network.n_biases, n_points=n_points, delta=float(delta), C=float(C),
                  seconds=float(seconds), layers=rows, excluded=excluded,
                  layer_keep=None if layer_keep is None else {int(k): float(v) for k, v in layer_keep.items()})
