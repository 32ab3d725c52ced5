"""``sparsify prune``: prune a model file with SiPP and write the pruned model."""
from __future__ import annotations

import argparse
import sys

from .._validation import check_scalar
from ..allocation import ALLOCATIONS, DEFAULT_ALLOCATION
from ..bounds import DEFAULT_C, DEFAULT_DELTA
from ..prune import DEFAULT_METHOD, METHODS
from ._common import add_model_args, check_outputs, json_writer, load_model, load_points

__all__ = ["DEFAULT_KEEP", "register", "run"]

#: --keep when neither --keep nor --budget is given
DEFAULT_KEEP = 0.1

DESCRIPTION = """\
Prune MODEL with sensitivity-informed provable pruning (SiPP).

The batch S (--data, a .npy array of shape (n_points, n_in), or NCHW
(n_points, c, h, w) for a model with convolutions; memory-mapped) defines each
weight's empirical sensitivity. Per neuron side, weights are kept
deterministically (largest sensitivity) or by importance sampling with
reweighting ('hybrid' picks whichever has the smaller error bound) under a
global budget (or, with --keep F0,F1,..., one budget per layer; --exclude
leaves layers dense). Prints a per-layer report; the pruned model is written
atomically to --out, together with --json and --masks if given.
"""

EXAMPLES = """\
examples:
  sparsify prune model.npz --data S.npy --keep 0.1 --out pruned.npz
  sparsify prune model.npz --data S.npy --budget 5000 --method det --json report.json --out pruned.npz
  sparsify prune export.npz --activations relu,relu,identity --data S.npy --keep 0.2 --out pruned.npz
  sparsify prune model.npz --data S.npy --keep 0.1 --exclude 0,2 --out pruned.npz --masks masks.npz
  sparsify prune model.npz --data S.npy --keep 0.5,0.1,0.5 --out pruned.npz
  sparsify prune cnn.onnx --data images.npy --keep 0.2 --out pruned.onnx
"""


def _keep_arg(text: str):
    """``F`` or ``F0,F1,...`` (one fraction per layer); the range is checked by prune."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction like 0.1 or one per layer like 0.5,0.1,0.5, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _index_list_arg(text: str):
    """``0,2``: layer indices."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer indices like 0,2, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a model with SiPP", description=DESCRIPTION, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, metavar="S.npy",
                   help="input batch S, shape (n_points, n_in), or (n_points, c, h, w) for a model with "
                        "convolutions (NCHW); memory-mapped and read in blocks")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--keep", type=_keep_arg, metavar="F",
                      help=f"fraction of prunable weights to keep, in (0, 1] (default {DEFAULT_KEEP}); "
                           "or one fraction per layer, e.g. 0.5,0.1,0.5 (each layer its own budget)")
    size.add_argument("--budget", type=int, metavar="N", help="number of weights to keep")
    p.add_argument("--exclude", type=_index_list_arg, metavar="I,J",
                   help="layers left dense (every weight kept, outside the budget), e.g. 0,2")
    p.add_argument("--method", choices=list(METHODS), default=None,
                   help=f"per-side rule (default: {DEFAULT_METHOD}; det with --pattern)")
    defaults = ", ".join(f"{a} for {m}" for m, a in DEFAULT_ALLOCATION.items())
    p.add_argument("--allocation", choices=list(ALLOCATIONS), default=None,
                   help=f"budget rule (default: {defaults})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bits")
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                   help=f"failure probability of the bounds (default {DEFAULT_DELTA:g})")
    p.add_argument("--C", type=float, default=DEFAULT_C,
                   help=f"out-of-sample constant C of g(x) <= C s (default {DEFAULT_C:g})")
    # least-squares refit and N:M patterns (sparsify.reconstruct, sparsify.patterns)
    p.add_argument("--reconstruct", action="store_true",
                   help="refit kept weights and biases by ridge least squares (no bound applies after)")
    p.add_argument("--calibration", metavar="C.npy", help="extra calibration points for --reconstruct")
    p.add_argument("--lam", type=float, default=None,
                   help="relative ridge of --reconstruct, times the mean Gram diagonal (default 1e-4)")
    p.add_argument("--pattern", metavar="N:M", help="keep the top-N sensitivities of every M inputs (e.g. 2:4)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="where to write the pruned model; the suffix picks the format (.npz, .onnx, .safetensors)")
    p.add_argument("--format", choices=["auto", "csr"], default="auto",
                   help="auto: from the suffix of --out (default); csr: scipy.sparse CSR arrays in an .npz archive")
    p.add_argument("--json", metavar="REPORT.json", help="also write the report as JSON")
    p.add_argument("--masks", metavar="MASKS.npz",
                   help="also write the boolean keep-masks (mask0, mask1, ...; True = kept) as .npz")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..io import atomic_write_many, writer
    from ..prune import prune

    check_outputs((args.out, "--out"), (args.json, "--json"), (args.masks, "--masks"))  # before the work
    if args.format == "auto":
        writer(None, args.out, "--out")  # an unknown suffix is refused before the work
    per_layer = isinstance(args.keep, list)
    for k, value in enumerate(args.keep if per_layer else [args.keep]):  # before any file is read
        if value is not None:
            check_scalar(value, f"keep[{k}]" if per_layer else "keep", low=0.0, high=1.0, low_open=True)
    net = load_model(args)
    if args.format == "csr" and any(layer.kind != "dense" for layer in net.layers):
        from ..io.csr import network_to_csr_arrays

        try:
            network_to_csr_arrays(net)  # refuses what CSR cannot hold before the work
        except ValueError as exc:
            raise ValueError(f"--format csr: {exc}") from None
    X = load_points(args.data, "--data", net.input_shape)
    keep = args.keep if args.keep is not None or args.budget is not None or args.pattern else DEFAULT_KEEP
    args.method = args.method or ("det" if args.pattern else DEFAULT_METHOD)
    extra = dict(reconstruct=args.reconstruct, lam=args.lam, pattern=args.pattern,
                 calibration=load_points(args.calibration, "--calibration", net.input_shape) if args.calibration else None)
    if args.exclude is not None:
        extra["exclude"] = args.exclude
    if not args.quiet:
        print(f"pruning {net} with {args.method} on |S| = {X.shape[0]} points ...", file=sys.stderr)
    res = prune(net, X, keep=keep, budget=args.budget, method=args.method, allocation=args.allocation,
                rng=args.seed, delta=args.delta, C=args.C, **extra)
    report = res.report.to_dict()
    report.update(model=str(args.model), data=str(args.data), seed=args.seed, out=str(args.out))
    if args.masks:
        report.update(masks=str(args.masks))
    if args.format == "csr":
        from ..io.csr import network_to_csr_arrays

        csr = network_to_csr_arrays(res.network)
        outputs = [(args.out, lambda fh: np.savez(fh, **csr), "--out")]
    else:
        outputs = [(args.out, writer(res.network, args.out, "--out"), "--out")]
    if args.json:
        outputs.append((args.json, json_writer(report), "--json"))
    if args.masks:
        masks = {f"mask{k}": np.asarray(m, dtype=bool) for k, m in enumerate(res.masks)}
        outputs.append((args.masks, lambda fh: np.savez(fh, **masks), "--masks"))
    atomic_write_many(outputs)  # all or nothing: a failure leaves no file
    if not args.quiet:
        print(res.report.format_table())
        print("wrote " + ", ".join(str(path) for path, _, _ in outputs))
    return 0
