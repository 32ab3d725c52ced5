"""The prune report: what was kept where, which bound was used, what error resulted.

Plain data (lists of dicts and numbers) so it serialises to JSON as is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


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
    points, then max / mean over sides).
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
    #: non-empty after a least-squares refit (docs/theory.md S16): the eps/err columns of
    #: selection no longer apply; rows carry ``refit_err_before``/``refit_err_after`` instead
    refit: str = ""

    @property
    def keep_requested(self) -> float:
        return self.requested / self.total

    @property
    def keep_achieved(self) -> float:
        return self.achieved / self.total

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
        )
        return _jsonable(out)

    def format_table(self) -> str:
        head = (
            f"method={self.method} allocation={self.allocation} |S|={self.n_points} "
            f"delta={self.delta:g} C={self.C:g}\n"
            f"kept {self.achieved}/{self.total} weights (requested {self.requested}: "
            f"keep {self.keep_requested:.4f}, achieved {self.keep_achieved:.4f}); "
            f"dead sides {self.dead_sides}; sampled sides {self.sampled_sides}; {self.seconds:.3f} s"
        )
        cols = ["layer", "shape", "kept/total", "+bias", "keep", "dead", "sampled", "det", "full",
                "eps max", "eps mean", "err max", "err mean"]
        rows = []
        for r in self.layers:
            rows.append([
                str(r["layer"]), r["shape"], f"{r['kept']}/{r['total']}",
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
        return "\n".join([head, line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])

    def __str__(self) -> str:
        return self.format_table()


def _num(x) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{x:.3g}"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return None if not np.isfinite(x) else x
    return obj
