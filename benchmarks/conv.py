"""Sensitivity of a convolution next to its forward pass (docs/theory.md S15).

``python -m benchmarks.conv [--quick] [--repeats R]`` times, for LeNet5-like and
ResNet-like conv layers, the layer's forward pass as an im2col GEMM (the
baseline: ``Conv2d.preactivation``) and ``sparsify.sensitivity`` with
``patch_reduction="max"`` and ``"mean"`` on the same points. The three run side
by side within each repeat (forward, max, mean, forward again; each ratio is to
the mean of the two forwards around it), so load from other processes hits
numerator and denominator alike; the table gives the median ratio over the
repeats and its range. Targets: max <= 8x, mean <= 6x the forward pass.

It also measures the peak memory that ``sensitivity`` allocates (tracemalloc,
which NumPy reports to) for |S| = 256 and 1024 points of the same layer: the
patch matrix of S is never built, so the peak should stay at the block size,
not grow with |S|. The CPU model and flags come first
(:func:`benchmarks.run.environment`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc

import numpy as np

import sparsify as sp

from .run import environment

#: (label, points, c_in, image side, c_out, kernel, padding)
SHAPES = [
    ("LeNet5 conv1", 256, 1, 32, 6, 5, 0),
    ("LeNet5 conv2", 256, 6, 14, 16, 5, 0),
    ("ResNet 16->16 @32x32", 256, 16, 32, 16, 3, 1),
    ("ResNet 64->64 @8x8", 256, 64, 8, 64, 3, 1),
]
QUICK_SHAPES = [("small 8->16 @16x16", 64, 8, 16, 16, 3, 1)]
#: the layer and point counts of the memory check
MEMORY_SHAPE = ("ResNet 16->16 @32x32", 16, 32, 16, 3, 1)
MEMORY_POINTS = (256, 1024)
TARGETS = {"max": 8.0, "mean": 6.0}


def _layer(n, c_in, side, c_out, k, pad, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
    net = sp.Network([sp.Conv2d(W, None, "relu", padding=pad)], input_shape=(c_in, side, side))
    X = np.maximum(rng.standard_normal((n, c_in, side, side)), 0)  # a hidden layer's input after ReLU
    return net, X


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(shapes, repeats: int) -> list:
    """Per shape: forward seconds and, per reduction, median / min / max of the ratio over repeats."""
    rows = []
    for label, n, c_in, side, c_out, k, pad in shapes:
        net, X = _layer(n, c_in, side, c_out, k, pad)
        conv = net.layers[0]
        fns = {"forward": lambda: conv.preactivation(X)}
        for reduction in ("max", "mean"):
            fns[reduction] = lambda r=reduction: sp.sensitivity(net, X, patch_reduction=r)
        for fn in fns.values():  # compile and warm
            fn()
        ratios = {"max": [], "mean": []}
        forwards, seconds = [], {"max": [], "mean": []}
        for _ in range(repeats):
            before = _time(fns["forward"])
            t = {r: _time(fns[r]) for r in ("max", "mean")}
            after = _time(fns["forward"])
            base = 0.5 * (before + after)
            forwards.append(base)
            for r in ("max", "mean"):
                seconds[r].append(t[r])
                ratios[r].append(t[r] / base)
        row = dict(label=label, points=n, c_in=c_in, image=side, c_out=c_out, kernel=k, padding=pad,
                   patches=conv.patches_per_point((c_in, side, side)), forward_seconds=statistics.median(forwards))
        for r in ("max", "mean"):
            row[r] = dict(seconds=statistics.median(seconds[r]), ratio=statistics.median(ratios[r]),
                          ratio_min=min(ratios[r]), ratio_max=max(ratios[r]), target=TARGETS[r])
        rows.append(row)
    return rows


def memory(points=MEMORY_POINTS, shape=MEMORY_SHAPE) -> list:
    """Peak bytes traced while ``sensitivity`` runs (both reductions), per number of points;
    the input ``X`` itself is allocated before tracing starts."""
    label, c_in, side, c_out, k, pad = shape
    out = []
    for n in points:
        net, X = _layer(n, c_in, side, c_out, k, pad)
        row = dict(label=label, points=n, input_bytes=X.nbytes,
                   patch_matrix_bytes=net.layers[0].patches_per_point((c_in, side, side)) * n * c_in * k * k * 8)
        for r in ("max", "mean"):
            sp.sensitivity(net, X[:64], patch_reduction=r)  # compiled (block-size paths too) before tracing
            tracemalloc.start()
            sp.sensitivity(net, X, patch_reduction=r)
            row[f"peak_bytes_{r}"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        out.append(row)
    return out


def format_rows(rows, mem) -> str:
    lines = ["| layer | S x (c_in, h, w) -> c_out, kernel | P | forward s | max: ratio (range) | "
             "mean: ratio (range) |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[x]['ratio']:.2f}x ({r[x]['ratio_min']:.2f}-{r[x]['ratio_max']:.2f})"
                 + ("" if r[x]["ratio"] <= r[x]["target"] else " MISS") for x in ("max", "mean")]
        lines.append(f"| {r['label']} | {r['points']} x ({r['c_in']}, {r['image']}, {r['image']}) -> {r['c_out']}, "
                     f"{r['kernel']}x{r['kernel']} | {r['patches']} | {r['forward_seconds']:.3f} | {cells[0]} | "
                     f"{cells[1]} |")
    if mem:
        lines += ["", "| layer | S | input MB | patch matrix of S MB | peak traced MB, max | mean |",
                  "|---|---|---|---|---|---|"]
        for m in mem:
            lines.append(f"| {m['label']} | {m['points']} | {m['input_bytes'] / 2**20:.1f} | "
                         f"{m['patch_matrix_bytes'] / 2**20:.1f} | {m['peak_bytes_max'] / 2**20:.1f} | "
                         f"{m['peak_bytes_mean'] / 2**20:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small layer, one repeat, small memory check")
    parser.add_argument("--repeats", type=int, default=5, help="side-by-side repeats per layer (default 5)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the rows and the environment as JSON")
    args = parser.parse_args(argv)
    env = environment()
    print(f"cpu: {env['cpu']}, {env['cores']} cores, numba threads {env['numba_threads']}, "
          f"load {env['loadavg_start']}")
    print(f"cpu flags: {env['cpu_flags']}")
    rows = bench(QUICK_SHAPES if args.quick else SHAPES, 1 if args.quick else args.repeats)
    mem = memory((16, 64), ("small 8->16 @16x16", 8, 16, 16, 3, 1)) if args.quick else memory()
    print(format_rows(rows, mem))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "conv": rows, "memory": mem}, fh, default=str, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
