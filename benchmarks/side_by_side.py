"""Two source trees of sparsify side by side: the public ``sp.sensitivity`` of one dense layer
against the same-shape GEMM ``A @ W.T``, in alternating processes.

    python -m benchmarks.side_by_side OLD_TREE NEW_TREE [--rounds 3] [--json OUT]

Each tree is imported from its own folder (``PYTHONPATH``) in a fresh process; the
processes alternate, ``--rounds`` times, so that a slow spell of a shared machine falls
on both. In every process each shape is warmed up, then the step and the GEMM are
timed in turns ``--repeats`` times and the ratio of their best times is kept (on a
shared virtual machine the medians of the same process moved by 2x from run to run, the
minima by a few percent: the minimum is the run nothing else disturbed). The table
gives the median and the range of those ratios over the rounds: the issue's six rows
(float64/float32 x 1024^3, 512x784x300, signed 512x784x300), and the linear-cost rows
(4x points, 4x weights: time of the larger problem / the smaller).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROWS = [("float64", 1024, 1024, 1024, False), ("float64", 512, 784, 300, False), ("float64", 512, 784, 300, True),
        ("float32", 1024, 1024, 1024, False), ("float32", 512, 784, 300, False), ("float32", 512, 784, 300, True)]
SCALING = [("4x points", (512, 1024, 1024), (2048, 1024, 1024)), ("4x weights", (512, 512, 512), (512, 1024, 1024))]

_CHILD = r"""
import json, sys, time
import numpy as np
import sparsify as sp

rows, scaling, repeats = json.loads(sys.argv[1])

def net_of(W):
    return sp.Network([sp.Dense(W)])

def data(dtype, n, d, o, signed, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)).astype(dtype)
    if not signed:
        A = np.abs(A)
    return A, rng.standard_normal((o, d)).astype(dtype)

out = {"rows": [], "scaling": []}
for dtype, n, d, o, signed in rows:
    A, W = data(dtype, n, d, o, signed)
    net = net_of(W)
    sp.sensitivity(net, A); A @ W.T
    ts, gs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); sp.sensitivity(net, A); ts.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); A @ W.T; gs.append(time.perf_counter() - t0)
    out["rows"].append(float(min(ts) / min(gs)))
for name, small, large in scaling:
    times = []
    for n, d, o in (small, large):
        A, W = data("float64", n, d, o, False)
        net = net_of(W)
        sp.sensitivity(net, A)
        t = []
        for _ in range(repeats):
            t0 = time.perf_counter(); sp.sensitivity(net, A); t.append(time.perf_counter() - t0)
        times.append(float(min(t)))
    out["scaling"].append(times[1] / times[0])
print(json.dumps(out))
"""


def run_tree(tree: str, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    arg = json.dumps([ROWS, SCALING, repeats])
    done = subprocess.run([sys.executable, "-c", _CHILD, arg], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.side_by_side", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="source tree of the version before (a folder holding sparsify/)")
    parser.add_argument("new", help="source tree of the version after")
    parser.add_argument("--rounds", type=int, default=3, help="alternating process pairs (default 3)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per shape in a process (default 7)")
    parser.add_argument("--json", metavar="OUT", help="also write all numbers to this JSON file")
    args = parser.parse_args(argv)
    for tree in (args.old, args.new):
        if not os.path.isfile(os.path.join(tree, "sparsify", "__init__.py")):
            parser.error(f"{tree}: no sparsify/__init__.py there; give the folder that holds the package.")
    import numpy as np

    from benchmarks.run import _cpu_model as cpu_model

    res = {"old": [], "new": [], "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": cpu_model(),
           "load_start": os.getloadavg()[0]}
    for r in range(args.rounds):
        for side, tree in (("old", args.old), ("new", args.new)):
            print(f"round {r + 1}/{args.rounds}: {side} ({tree})", file=sys.stderr, flush=True)
            res[side].append(run_tree(tree, args.repeats))
    res["load_end"] = os.getloadavg()[0]

    def cell(side, key, k):
        v = [run[key][k] for run in res[side]]
        return f"{np.median(v):.2f} [{min(v):.2f}-{max(v):.2f}]"

    print(f"{res['date']}  cpu {res['cpu']}  load average {res['load_start']:.2f} -> {res['load_end']:.2f}")
    print(f"sensitivity / GEMM (best of {args.repeats} each), median [range] over {args.rounds} alternating rounds")
    print(f"| dtype | points x in x out | inputs | {args.old} | {args.new} |")
    print("|---|---|---|---|---|")
    for k, (dtype, n, d, o, signed) in enumerate(ROWS):
        print(f"| {dtype} | {n}x{d}x{o} | {'signed' if signed else '>= 0'} | {cell('old', 'rows', k)} | "
              f"{cell('new', 'rows', k)} |")
    for k, (name, _, _) in enumerate(SCALING):
        print(f"| float64 | {name} | | {cell('old', 'scaling', k)} | {cell('new', 'scaling', k)} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
