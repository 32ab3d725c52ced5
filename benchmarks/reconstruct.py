"""Reconstruction benchmark: the least-squares refit (docs/theory.md S16) against the
selection step it follows, and against a floor computed from its flop count.

Network 784-300-100-10 (seeded random weights), 1,000 calibration points with
pixel-like values in [0, 1), S = the same points, method hybrid, keep 0.1 and 0.5.
Reported per keep: median seconds of ``reconstruct`` and of the selection call
``sparsify.prune`` on the same points, their ratio, the flops of the refit (the
Gram GEMMs ``2 n (n_in+1)(n_in+1+n_out)`` per layer plus ``Σ_rows |K|³/3`` for the
Cholesky factorisations) and the floor ``flops / rate``, with ``rate`` a
float64 GEMM of the first layer's shape measured on this machine.

Run: ``python -m benchmarks.reconstruct`` (or as part of ``python -m benchmarks``).
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

WIDTHS = [784, 300, 100, 10]
N_POINTS = 1000
KEEPS = (0.1, 0.5)


def _median_seconds(fn, repeats: int) -> float:
    fn()                                                   # compile / warm up, untimed
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def refit_flops(widths, masks, n_points: int) -> float:
    """Gram GEMM flops plus the Cholesky flops ``Σ_rows |K|³/3`` (K with the bias column)."""
    flops = 0.0
    for k, mask in enumerate(masks):
        n_in, n_out = widths[k], widths[k + 1]
        flops += 2.0 * n_points * (n_in + 1) * (n_in + 1 + n_out)
        flops += float(np.sum((mask.sum(axis=1) + 1.0) ** 3) / 3.0)
    return flops


def gemm_rate(n_points: int = N_POINTS, n_in: int = WIDTHS[0] + 1, n_cols: int = WIDTHS[0] + 1 + WIDTHS[1],
              repeats: int = 5) -> float:
    """Measured float64 GEMM flop rate (flop/s) of ``(n_in × n_points) @ (n_points × n_cols)``."""
    rng = np.random.default_rng(0)
    A, B = rng.random((n_in, n_points)), rng.random((n_points, n_cols))
    return 2.0 * n_in * n_points * n_cols / _median_seconds(lambda: A @ B, repeats)


def bench_reconstruct(repeats: int = 3) -> dict:
    import sparsify as sp
    from sparsify.reconstruct import reconstruct

    net = sp.random_mlp(WIDTHS, rng=0)
    X = np.random.default_rng(1).random((N_POINTS, WIDTHS[0]))
    rate = gemm_rate()
    rows = []
    for keep in KEEPS:
        res = sp.prune(net, X, keep=keep, method="hybrid", rng=0)
        t_sel = _median_seconds(lambda: sp.prune(net, X, keep=keep, method="hybrid", rng=0), repeats)
        t_rec = _median_seconds(lambda: reconstruct(net, res.network, res.masks, X), repeats)
        flops = refit_flops(WIDTHS, res.masks, N_POINTS)
        rows.append(dict(keep=keep, reconstruct_s=t_rec, selection_s=t_sel, ratio=t_rec / t_sel, gflop=flops / 1e9,
                         floor_s=flops / rate, over_floor=t_rec / (flops / rate)))
    return {"gemm_gflops": rate / 1e9, "rows": rows}


def format_reconstruct(result: dict) -> str:
    lines = [f"reconstruction, {'-'.join(map(str, WIDTHS))}, {N_POINTS} calibration points "
             f"(float64 GEMM rate {result['gemm_gflops']:.1f} GFLOP/s)",
             "  keep  refit s  selection s  refit/selection  GFLOP  floor s  refit/floor"]
    for r in result["rows"]:
        lines.append(f"  {r['keep']:4.2f}  {r['reconstruct_s']:7.3f}  {r['selection_s']:11.3f}  {r['ratio']:15.2f}"
                     f"  {r['gflop']:5.2f}  {r['floor_s']:7.3f}  {r['over_floor']:11.1f}")
    return "\n".join(lines)


def main() -> int:
    print(format_reconstruct(bench_reconstruct()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
