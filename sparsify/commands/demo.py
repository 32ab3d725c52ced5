"""``sparsify demo [--quick] [--out DIR]``: a small, fast preset of the experiment on digits."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DESCRIPTION = """\
Train a 64-300-100-10 ReLU network on scikit-learn's bundled 8x8 digits (no
download), prune it with SiPP (det, rand, hybrid, det with balanced
allocation) and the baselines (global and layer-wise magnitude, random, SNIP,
wanda) over a grid of kept fractions and three seeds, fine-tune after each
prune, and compare: test accuracy per method and kept fraction, the largest
prune ratio within 0.5 / 1 / 2 percentage points of the unpruned network, and
a lottery-ticket panel (SiPP mask vs random mask trained from the original
initialisation). Prints the summary and the per-layer report of the hybrid
run; writes results.csv, results.json, summary.txt and plots to --out.

With --oneshot the demo prunes the same reference networks once, without
fine-tuning, at kept fractions 0.5 ... 0.05, and adds the least-squares refit
(sipp-hybrid+ls, magnitude-global+ls, wanda+ls: the kept weights and biases
refitted on S plus 1,000 training points) and OBS next to the faithful methods;
it prints how sipp-hybrid+ls compares with global magnitude pruning.

A few minutes on 2 cores; --quick (one seed, three kept fractions) takes
well under a minute. Without scikit-learn the demo runs on a dataset sparsify
generates itself. Re-running with the same --out resumes an interrupted run.
"""

#: kept fraction and method whose prune report is printed.
REPORT_KEEP = 0.1
REPORT_METHOD = "sipp-hybrid"
#: the refit methods of the --oneshot preset, shown after the faithful ones.
ONESHOT_REFIT = ["sipp-hybrid+ls", "magnitude-global+ls", "wanda+ls", "obs"]
#: kept fractions of the --oneshot preset (--quick: three of them).
ONESHOT_KEEPS = [0.5, 0.3, 0.2, REPORT_KEEP, 0.05]


def register(sub) -> None:
    p = sub.add_parser("demo", help="prune a network trained on digits with SiPP and baselines, compare",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed and three kept fractions (under a minute)")
    p.add_argument("--oneshot", action="store_true",
                   help="prune once without fine-tuning, with the least-squares refit methods and OBS next to the "
                        "faithful ones")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ./sparsify-demo-YYYYmmdd-HHMMSS)")
    p.add_argument("--seed", type=int, default=0, help="first seed of the repetitions (default 0)")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    p.set_defaults(func=run)


def preset(quick: bool, seed: int = 0, data: str = "digits", oneshot: bool = False) -> dict:
    """The demo's settings as an experiment configuration dict."""
    if seed < 0:
        raise ValueError(f"--seed: must be a non-negative integer, got {seed}.")
    if oneshot:  # the same reference networks as the full demo, pruned once
        from ..experiment import DEFAULT_METHODS

        return dict(data=data, hidden=[300, 100], mode="oneshot", lottery=False, epochs=30, milestones=[15, 25],
                    methods=list(DEFAULT_METHODS) + ONESHOT_REFIT, calibration=1000,
                    keeps=[0.3, REPORT_KEEP, 0.05] if quick else ONESHOT_KEEPS,
                    seeds=[seed] if quick else [seed, seed + 1, seed + 2])
    common = dict(data=data, hidden=[300, 100], mode="retrain", lottery=True)
    if quick:
        return dict(common, epochs=20, milestones=[10, 15], retrain_epochs=5, retrain_milestones=[4],
                    keeps=[0.3, REPORT_KEEP, 0.03], seeds=[seed], lottery_keeps=[REPORT_KEEP])
    return dict(common, epochs=30, milestones=[15, 25], retrain_epochs=10, retrain_milestones=[7],
                keep_max=0.5, keep_min=0.02, keep_points=7, seeds=[seed, seed + 1, seed + 2],
                lottery_keeps=[0.2, REPORT_KEEP, 0.05, 0.02])


def run(args) -> int:
    from ..data import have_sklearn
    from ..experiment import ExperimentConfig, format_layers, reprune, run_experiment

    data = "digits"
    if not have_sklearn():
        data = "generated"
        print("notice: scikit-learn is not installed, so the demo uses a dataset sparsify generates itself "
              "instead of the bundled digits (pip install 'sparsify[data]' for digits).", file=sys.stderr)
    oneshot = getattr(args, "oneshot", False)
    config = ExperimentConfig.from_dict(preset(args.quick, args.seed, data, oneshot=oneshot), source="demo")
    out = Path(args.out) if args.out else Path(f"sparsify-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    result = run_experiment(config, out, plots=not args.no_plots)
    seconds = time.perf_counter() - t0

    print(result.summary.split("\n\nkept weights per layer")[0])
    print()
    print(format_layers(result.rows, config.mode, seed=config.seeds[0], keeps=[REPORT_KEEP]))
    if oneshot:
        from ..experiment.refit import format_comparison

        print()
        for other in ("magnitude-global", "magnitude-global+ls", "wanda+ls", "obs"):
            print(format_comparison(result.rows, "sipp-hybrid+ls", other))
    res, X_S = reprune(config, out, REPORT_METHOD + ("+ls" if oneshot else ""), REPORT_KEEP, config.seeds[0])
    sampled = res.report.sampled_sides
    print(f"\nSiPP hybrid{' with the refit' if oneshot else ''} at keep {REPORT_KEEP} (seed {config.seeds[0]}, "
          f"|S| = {len(X_S)}): "
          f"{sampled} side(s) sampled" + (" - with the authors' delta and C, hybrid acts as per-neuron top-m"
                                          if sampled == 0 else ""))
    print(res.report.format_table())
    print(f"\nfinished in {seconds:.0f} s; results in {out}/: results.csv, results.json, summary.txt"
          + "".join(f", {p.name}" for p in result.plots))
    return 0
