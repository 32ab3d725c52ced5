"""``sparsify demo``: prune a built-in network with the three SiPP methods."""
from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Prune a built-in, seeded ReLU teacher network (64-300-100-10, no download)
with det, rand and hybrid SiPP at a few keep ratios and print the reports,
plus how far the pruned network's output moves on held-out inputs.
"""


def register(sub) -> None:
    p = sub.add_parser("demo", help="run SiPP on a built-in network", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quick", action="store_true", help="one keep ratio only")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..bounds import DEFAULT_DELTA
    from ..network import random_mlp
    from ..prune import prune

    rng = np.random.default_rng(args.seed)
    net = random_mlp([64, 300, 100, 10], rng=rng)
    n_s = int(np.ceil(3 * np.log(8 * 410 * 300 / DEFAULT_DELTA)))
    X_S = rng.standard_normal((n_s, 64))
    X_T = rng.standard_normal((1000, 64))
    Y_T = net(X_T)
    keeps = [0.1] if args.quick else [0.05, 0.1, 0.3]
    print(f"network {net}; |S| = {n_s} points (the authors' sizing); held-out |T| = {X_T.shape[0]}\n")
    summary = []
    for keep in keeps:
        for method in ("det", "rand", "hybrid"):
            print(f"[{method} keep={keep}] ...", file=sys.stderr)
            res = prune(net, X_S, keep=keep, method=method, rng=args.seed)
            print(res.report.format_table(), "\n")
            out = res.network(X_T)
            rel = np.linalg.norm(out - Y_T, axis=1) / np.linalg.norm(Y_T, axis=1)
            agree = np.mean(out.argmax(1) == Y_T.argmax(1))
            summary.append((method, keep, res.report.keep_achieved, float(np.median(rel)), float(agree)))
    print("summary on held-out inputs (output error relative to the unpruned network):")
    print(f"{'method':>7} {'keep':>6} {'achieved':>9} {'median rel. error':>18} {'argmax agreement':>17}")
    for method, keep, ach, rel, agree in summary:
        print(f"{method:>7} {keep:>6.2f} {ach:>9.4f} {rel:>18.4f} {agree:>17.3f}")
    return 0
