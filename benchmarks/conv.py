"""Sensitivity of a convolution next to its forward pass (docs/theory.md S15).

``python -m benchmarks.conv [--quick]`` times, for a few conv layers, the
layer's forward pass as an im2col GEMM (the baseline) and ``sparsify.sensitivity``
with ``patch_reduction="max"`` and ``"mean"`` on the same points, and prints
each as a ratio to the forward pass (paired, median over repeats), with the
environment of :func:`benchmarks.run.environment`.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import sparsify as sp

from .run import environment, paired

#: (points, c_in, image side, c_out, kernel, padding)
SHAPES = [(256, 16, 32, 32, 3, 1), (256, 64, 16, 64, 3, 1), (512, 3, 32, 16, 5, 2)]
QUICK_SHAPES = [(64, 8, 16, 16, 3, 1)]


def bench(shapes, repeats: int) -> list:
    rows = []
    for n, c_in, side, c_out, k, pad in shapes:
        rng = np.random.default_rng(0)
        W = rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
        net = sp.Network([sp.Conv2d(W, None, "relu", padding=pad)], input_shape=(c_in, side, side))
        X = np.maximum(rng.standard_normal((n, c_in, side, side)), 0)

        def forward():
            net.layers[0].preactivation(X)

        row = {"points": n, "c_in": c_in, "image": side, "c_out": c_out, "kernel": k}
        for reduction in ("max", "mean"):
            res = paired(lambda: sp.sensitivity(net, X, patch_reduction=reduction), forward, repeats)
            row[reduction] = res
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small layer, one repeat")
    args = parser.parse_args(argv)
    rows = bench(QUICK_SHAPES if args.quick else SHAPES, 1 if args.quick else 5)
    for r in rows:
        print(f"{r['points']} x ({r['c_in']}, {r['image']}, {r['image']}) -> {r['c_out']} ch, {r['kernel']}x{r['kernel']}: "
              f"forward {r['max']['baseline_seconds']:.3f} s; sensitivity max {r['max']['seconds']:.3f} s "
              f"({r['max']['ratio']:.2f}x), mean {r['mean']['seconds']:.3f} s ({r['mean']['ratio']:.2f}x)")
    print(json.dumps({"environment": environment(), "conv": rows}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
