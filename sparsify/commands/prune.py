"""``sparsify prune``: prune a model file with SiPP and write the pruned model."""
from __future__ import annotations

import argparse
import sys

from ._common import add_model_args, json_writer, load_model, load_points

DESCRIPTION = """\
Prune MODEL with sensitivity-informed provable pruning (SiPP).

The batch S (--data, a .npy array of shape (n_points, n_in)) defines each
weight's empirical sensitivity. Per neuron side, weights are kept
deterministically (largest sensitivity) or by importance sampling with
reweighting ('hybrid' picks whichever has the smaller error bound) under a
global budget. Prints a per-layer report; the pruned model is written
atomically to --out.
"""

EXAMPLES = """\
examples:
  sparsify prune model.npz --data S.npy --keep 0.1 --out pruned.npz
  sparsify prune model.npz --data S.npy --budget 5000 --method det --json report.json --out pruned.npz
  sparsify prune export.npz --activations relu,relu,identity --data S.npy --keep 0.2 --out pruned.npz
"""


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a model with SiPP", description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, metavar="S.npy", help="input batch S, shape (n_points, n_in)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--keep", type=float, metavar="F",
                      help="fraction of prunable weights to keep, in (0, 1] (default 0.1)")
    size.add_argument("--budget", type=int, metavar="N", help="number of weights to keep")
    p.add_argument("--method", choices=["det", "rand", "hybrid"], default=None,
                   help="per-side rule (default: hybrid; det with --pattern)")
    p.add_argument("--allocation", choices=["global", "balanced"], default=None,
                   help="budget rule (default: global for det, balanced for rand/hybrid)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bits")
    p.add_argument("--delta", type=float, default=1e-16, help="failure probability of the bounds (default 1e-16)")
    p.add_argument("--C", type=float, default=3.0, help="out-of-sample constant C of g(x) <= C s (default 3)")
    # least-squares refit and N:M patterns (sparsify.reconstruct, sparsify.patterns)
    p.add_argument("--reconstruct", action="store_true",
                   help="refit kept weights and biases by ridge least squares (no bound applies after)")
    p.add_argument("--calibration", metavar="C.npy", help="extra calibration points for --reconstruct")
    p.add_argument("--lam", type=float, default=None,
                   help="relative ridge of --reconstruct, times the mean Gram diagonal (default 1e-4)")
    p.add_argument("--pattern", metavar="N:M", help="keep the top-N sensitivities of every M inputs (e.g. 2:4)")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="where to write the pruned model")
    p.add_argument("--json", metavar="REPORT.json", help="also write the report as JSON")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..io import atomic_write_many, network_to_arrays
    from ..prune import prune

    net = load_model(args)
    X = load_points(args.data)
    keep = args.keep if args.keep is not None or args.budget is not None or args.pattern else 0.1
    args.method = args.method or ("det" if args.pattern else "hybrid")
    extra = dict(reconstruct=args.reconstruct, lam=args.lam, pattern=args.pattern,
                 calibration=load_points(args.calibration, "--calibration") if args.calibration else None)
    if not args.quiet:
        print(f"pruning {net} with {args.method} on |S| = {X.shape[0]} points ...", file=sys.stderr)
    res = prune(net, X, keep=keep, budget=args.budget, method=args.method, allocation=args.allocation,
                rng=args.seed, delta=args.delta, C=args.C, **extra)
    report = res.report.to_dict()
    report.update(model=str(args.model), data=str(args.data), seed=args.seed, out=str(args.out))
    arrays = network_to_arrays(res.network)
    outputs = [(args.out, lambda fh: np.savez(fh, **arrays), "--out")]
    if args.json:
        outputs.append((args.json, json_writer(report), "--json"))
    atomic_write_many(outputs)  # all or nothing: a failure leaves neither file
    if not args.quiet:
        print(res.report.format_table())
        print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""))
    return 0
