"""``sparsify verify``: check the per-side guarantees of SiPP over many seeds."""
from __future__ import annotations

import argparse
import sys

from .._validation import check_scalar
from ..allocation import ALLOCATIONS
from ..bounds import DEFAULT_C, DEFAULT_DELTA
from ..prune import DEFAULT_METHOD, METHODS
from .prune import DEFAULT_KEEP
from ..verify import EPS_MAX
from ._common import add_model_args, check_outputs, json_writer, load_model, load_points

DESCRIPTION = """\
Check SiPP's guarantees numerically.

MODEL is pruned with --seeds independent seeds using the batch S (--data). For
every layer, neuron side and point of S and of the held-out batch T (--test),
the side's pre-activation must stay within (1 +- eps) of the original, where
eps is the bound the method claims for that side (or --eps). One trial is one
seed; a layer fails on a seed if any side fails at any point. Per layer the
command prints the failure rate, its exact Clopper-Pearson upper bound, the
rate the theory allows (delta times sampled sides times points, by the union
bound) and a verdict:

  holds              failures within the allowance (with delta = 1e-16: none);
                     with failures it says why the claim is vacuous
  violated           the Clopper-Pearson lower bound exceeds the allowance
  not enough trials  more failures than allowed, but possibly by chance

S needs no assumption; T relies on g(x) <= C s. It also compares the output
error with the propagated network-level bound, and reports bound/measured
(how loose each bound is). docs/theory.md explains every number. Exit status:
0 when no in-sample guarantee is violated, 1 when one is, 2 on bad input.
"""

EXAMPLES = """\
examples:
  sparsify verify model.npz --data S.npy --test T.npy
  sparsify verify model.npz --data S.npy --test T.npy --method rand --delta 0.05 --seeds 200 --json v.json
  sparsify verify export.npz --activations relu,relu,identity --data S.npy --test T.npy --plot v.png
  sparsify verify model.npz --data S.npy --test T.npy --seeds 200 --dask local:4
"""


def register(sub) -> None:
    p = sub.add_parser("verify", help="check the pruning guarantees over many seeds", description=DESCRIPTION,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--data", required=True, metavar="S.npy", help="batch S used for pruning, (n_points, n_in) or NCHW "
                                                                                   "(n_points, c, h, w)")
    p.add_argument("--test", required=True, metavar="T.npy", help="held-out batch T, shaped like S")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--keep", type=float, metavar="F", help=f"fraction of weights to keep, in (0, 1] (default {DEFAULT_KEEP})")
    size.add_argument("--budget", type=int, metavar="N", help="number of weights to keep")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=f"per-side rule (default {DEFAULT_METHOD})")
    p.add_argument("--allocation", choices=ALLOCATIONS, default=None,
                   help="budget rule (default: global for det, balanced otherwise)")
    p.add_argument("--seeds", type=int, default=50, metavar="N", help="independent prunings (default 50)")
    p.add_argument("--first-seed", type=int, default=0, metavar="K", help="seeds are K, K+1, ... (default 0)")
    p.add_argument("--eps", type=float, default=None,
                   help=f"one tolerance for every side, in (0, {EPS_MAX:g}] "
                        "(default: the bound each side claims)")
    p.add_argument("--delta", type=float, default=DEFAULT_DELTA,
                   help=f"failure probability (default {DEFAULT_DELTA:g})")
    p.add_argument("--C", type=float, default=DEFAULT_C,
                   help=f"out-of-sample constant C of g(x) <= C s (default {DEFAULT_C:g})")
    p.add_argument("--confidence", type=float, default=0.95, help="level of the Clopper-Pearson intervals (default 0.95)")
    p.add_argument("--patch-reduction", choices=("max", "mean"), default=None,
                   help="reduction of a convolution's sensitivities over patches (default: mean for det, max "
                        "otherwise); the per-(point, patch) bounds checked here hold with max")
    p.add_argument("--json", metavar="OUT.json", help="write the full result as JSON")
    p.add_argument("--plot", metavar="OUT.png",
                   help="also sweep keep fractions for det, rand and hybrid and plot error and bound per layer "
                        "(needs matplotlib)")
    p.add_argument("--dask", metavar="WHERE", default=None,
                   help="run the seeds (and the --plot prunings) as tasks on Dask: 'local' (one worker per core), "
                        "'local:N' or a scheduler address tcp://HOST:PORT; same results as without "
                        "(needs the 'dask' extra)")
    p.add_argument("--quiet", action="store_true", help="no progress and no table")
    p.set_defaults(func=run)


#: keep fractions of the --plot sweep
_PLOT_KEEPS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)


class _Progress:
    """A one-line counter on stderr (rewritten in place on a terminal)."""

    def __init__(self, label: str, enabled: bool):
        self.label, self.enabled = label, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.tty:
            print(f"\r{self.label} {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
            return
        tenth = (10 * done) // total
        if tenth != self.last or done == total:
            self.last = tenth
            print(f"{self.label} {done}/{total}", file=sys.stderr, flush=True)


def _check_numbers(args) -> None:
    """Every numeric option, with the rule the library applies (finite, in range)."""
    check_scalar(args.keep, "--keep", low=0.0, high=1.0, low_open=True, allow_none=True)
    check_scalar(args.budget, "--budget", kind="int", low=1, allow_none=True)
    check_scalar(args.seeds, "--seeds", kind="int", low=1)
    check_scalar(args.first_seed, "--first-seed", kind="int", low=0)
    check_scalar(args.eps, "--eps", low=0.0, low_open=True, high=EPS_MAX, allow_none=True)
    check_scalar(args.delta, "--delta", low=0.0, high=1.0, low_open=True, high_open=True)
    check_scalar(args.C, "--C", low=1.0)
    check_scalar(args.confidence, "--confidence", low=0.0, high=1.0, low_open=True, high_open=True)


def run(args) -> int:
    from ..distributed import check_dask, connect
    from ..io import atomic_write_many
    from ..verify import format_table, json_ready, plot_sweep, sweep, verify

    # everything that can be refused is refused here, before the long run
    _check_numbers(args)
    check_outputs((args.json, "--json"), (args.plot, "--plot"),
                  inputs=((args.model, "MODEL"), (args.data, "--data"), (args.test, "--test")))
    where = None if args.dask is None else check_dask(args.dask)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError("--plot needs matplotlib, which is in the 'plot' extra: "
                              "pip install 'sparsify[plot]'.") from None
    net = load_model(args)
    X_S = load_points(args.data, "--data", net.input_shape)
    X_T = load_points(args.test, "--test", net.input_shape)
    keep = args.keep if args.keep is not None or args.budget is not None else DEFAULT_KEEP
    show = not args.quiet
    with connect(where) as client:  # one cluster for the seeds and the plot
        result = verify(net, X_S, X_T, keep=keep, budget=args.budget, method=args.method, allocation=args.allocation,
                        seeds=args.seeds, first_seed=args.first_seed, eps=args.eps, delta=args.delta, C=args.C,
                        confidence=args.confidence, patch_reduction=args.patch_reduction,
                        progress=_Progress("verify: seed", show), dask=client)
        result.update(model=str(args.model), data=str(args.data), test=str(args.test))
        if show:
            print(format_table(result))
        outputs = []
        if args.json:
            outputs.append((args.json, json_writer(json_ready(result)), "--json"))  # non-finite floats as strings
        if args.plot:
            data = sweep(net, X_S, _PLOT_KEEPS, seed=args.first_seed, delta=args.delta, C=args.C,
                         patch_reduction=args.patch_reduction, progress=_Progress("plot: pruning", show),
                         dask=client)
            png = plot_sweep(data, None, title=f"{net}, |S|={X_S.shape[0]}, delta={args.delta:g}, C={args.C:g}")
            outputs.append((args.plot, lambda fh: fh.write(png), "--plot"))
    atomic_write_many(outputs)  # all or nothing
    if show and (args.json or args.plot):
        print("wrote " + " and ".join(p for p in (args.json, args.plot) if p))
    return 0 if result["holds"] else 1
