"""``sparsify experiment [CONFIG.toml] --out DIR``: the paper's experiment on real data."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


#: flag -> (config key, type, help); ``{name}`` in a help text is filled from the package's constants.
FLAGS = {
    "--data": ("data", str, "dataset: digits, generated, or mnist:DIR (a folder with the MNIST IDX files)"),
    "--data-seed": ("data_seed", int, "seed of the train/validation/test split"),
    "--model": ("model", str, "network: mlp (default), or the CNNs lenet and resnet (which read the features as "
                "one-channel square images, e.g. 1x8x8 for digits)"),
    "--hidden": ("hidden", _ints, "hidden widths of the MLP, e.g. 300,100"),
    "--activation": ("activation", str, "hidden activation (relu, tanh, ...)"),
    "--epochs": ("epochs", int, "epochs of training the reference network (and lottery tickets)"),
    "--batch-size": ("batch_size", int, "minibatch size"),
    "--lr": ("lr", float, "learning rate of training"),
    "--momentum": ("momentum", float, "SGD momentum"),
    "--weight-decay": ("weight_decay", float, "L2 weight decay on the weights"),
    "--milestones": ("milestones", _ints, "epochs where the learning rate is multiplied by gamma"),
    "--gamma": ("gamma", float, "learning-rate factor at each milestone"),
    "--retrain-epochs": ("retrain_epochs", int, "epochs of fine-tuning after each prune"),
    "--retrain-lr": ("retrain_lr", float, "learning rate of fine-tuning"),
    "--retrain-milestones": ("retrain_milestones", _ints, "milestones of fine-tuning"),
    "--methods": ("methods", _names, "comma-separated methods from {methods} (default: all of these); "
                  "also obs, and any of them with +ls (least-squares refit, e.g. sipp-hybrid+ls)"),
    "--keeps": ("keeps", _floats, "explicit kept fractions, e.g. 0.3,0.1,0.03 (overrides the geometric grid)"),
    "--keep-max": ("keep_max", float, "largest kept fraction of the geometric grid"),
    "--keep-min": ("keep_min", float, "smallest kept fraction of the geometric grid"),
    "--keep-points": ("keep_points", int, "number of kept fractions in the geometric grid"),
    "--seeds": ("seeds", _ints, "comma-separated seeds (repetitions)"),
    "--mode": ("mode", str, "one of {modes}: prune once, prune then fine-tune (default), a prune-retrain "
               "cascade, or prune while training"),
    "--s-size": ("s_size", int, "points in S (0: the authors' ceil(3 ln(8 eta eta* / delta)))"),
    "--delta": ("delta", float, "failure probability of the SiPP bounds (default {delta:g})"),
    "--C": ("C", float, "out-of-sample constant C of the SiPP bounds (default {C:g})"),
    "--lottery-method": ("lottery_method", str, "method whose mask the lottery-ticket panel trains "
                         "(default {lottery_method})"),
    "--lottery-keeps": ("lottery_keeps", _floats, "kept fractions of the lottery panel (default: the grid)"),
    "--imbalance": ("imbalance", str, "subsample training classes, e.g. 3,5:10 (classes 3 and 5 keep 1/10 of "
                    "their training points; validation and test splits untouched)"),
    "--analyses": ("analyses", _names, "comma-separated analyses from recall,stability: recall distortion "
                   "(recall.txt, recall.png) and generalization-stability (stability.txt, stability.png)"),
    "--prune-every": ("prune_every", int, "epochs between prune events of mode 'during'"),
    "--calibration": ("calibration", int, "training points added to S for the refit methods (name+ls, obs; "
                      "default {calibration}; 0 = S alone)"),
    "--lam": ("lam", float, "relative ridge of the least-squares refit of the +ls methods (default {lam:g})"),
}


def register(subparsers) -> None:
    from ..bounds import DEFAULT_C, DEFAULT_DELTA
    from ..experiment import METHODS, MODES, ExperimentConfig

    constants = dict(methods=", ".join(METHODS), modes=", ".join(MODES), delta=DEFAULT_DELTA, C=DEFAULT_C,
                     lottery_method=ExperimentConfig().lottery_method, calibration=ExperimentConfig().calibration,
                     lam=ExperimentConfig().lam)
    p = subparsers.add_parser(
        "experiment",
        help="train, prune with SiPP and baselines over a keep grid and seeds, report and plot",
        description=(
            "Run the pruning experiment: train a reference MLP, prune it with SiPP (det, rand, hybrid, "
            "det with balanced allocation) and the baselines (global/layer-wise magnitude, random, SNIP, "
            "wanda) over a geometric grid of kept fractions and several seeds, optionally fine-tune, and "
            "write results.csv, results.json, summary.txt and plots to --out. Settings come from a flat "
            "TOML file and/or flags (flags win). Re-running with the same --out resumes an interrupted run."
        ),
    )
    p.add_argument("config", nargs="?", help="flat TOML file with the settings (keys as in the flags, with _)")
    p.add_argument("--out", help="output folder (default: sparsify-experiment-YYYYmmdd-HHMMSS)")
    for flag, (key, kind, text) in FLAGS.items():
        p.add_argument(flag, dest=key, type=kind, default=None, help=text.format(**constants))
    lot = p.add_mutually_exclusive_group()
    lot.add_argument("--lottery", dest="lottery", action="store_true", default=None,
                     help="add the lottery-ticket panel (default: on)")
    lot.add_argument("--no-lottery", dest="lottery", action="store_false", help="skip the lottery-ticket panel")
    p.add_argument("--dask", metavar="WHERE", default=None,
                   help="run every cell as a task on Dask: local (one worker per core), local:N, or a scheduler "
                        "address tcp://HOST:PORT (overrides the config's dask); same rows, same resume, here or "
                        "there (needs the 'dask' extra)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def config_from_args(args):
    from ..experiment import ExperimentConfig, load_config

    values = load_config(args.config) if args.config else {}
    spelled = {key: flag for flag, (key, _, _) in FLAGS.items()}
    spelled["lottery"] = "--lottery/--no-lottery"
    given = {k: getattr(args, k) for k in spelled if getattr(args, k, None) is not None}
    values.update(given)
    return ExperimentConfig.from_dict(values, source=args.config or "flags", names={k: spelled[k] for k in given})


def run(args) -> int:
    import io

    from ..experiment import run_experiment
    from ..experiment.tasks import CellsFailed

    config = config_from_args(args)
    out = Path(args.out) if args.out else Path(f"sparsify-experiment-{time.strftime('%Y%m%d-%H%M%S')}")
    log = io.StringIO() if args.quiet else sys.stderr
    try:
        result = run_experiment(config, out, log=log, plots=not args.no_plots, dask=args.dask)
    except CellsFailed as exc:  # the finished cells are in results.csv; the tracebacks went to the log
        print(f"sparsify experiment: {exc}", file=sys.stderr)
        return 1
    print(result.summary)
    print(f"results: {out / 'results.csv'}, {out / 'results.json'}, {out / 'summary.txt'}"
          + "".join(f", {p}" for p in result.plots))
    return 0
