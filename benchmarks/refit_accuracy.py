"""One-shot accuracy with and without the least-squares refit, and OBS, on the digits MLP.

The demo's reference network (64-300-100-10 ReLU, 30 epochs, seeds as in the
experiment), S of the authors' size (152 points of the validation split), one-shot
pruning (no fine-tuning) at keep 0.5 ... 0.05. "+ls" refits on S plus 1,000
training points; "+ls(S)" on S alone; "obs" uses S plus the same 1,000 points
(lam 0.01, or 1e-4 where named); "obs(S)" S alone. Writes a JSON list of rows and
prints the table of docs/experiment.md.

Run: ``python -m benchmarks.refit_accuracy 0,1,2 OUT.json`` (a few minutes on 2 cores).
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

KEEPS = (0.5, 0.3, 0.2, 0.1, 0.05)


def run(seeds, out_path) -> list:
    import sparsify as sp
    from sparsify import data as D
    from sparsify import train as T
    from sparsify.baselines import prune_baseline
    from sparsify.experiment import ExperimentConfig
    from sparsify.experiment.run import _seq
    from sparsify.obs import prune_obs

    cfg = ExperimentConfig()
    ds = D.load_digits(rng=cfg.data_seed)
    rows = []
    for seed in seeds:
        init = T.init_mlp(cfg.widths(ds.n_features, ds.n_classes), cfg.activation, rng=_seq(seed, 0))
        net = T.train(init, ds.X_train, ds.y_train, rng=_seq(seed, 1), **cfg.schedule())
        X_S, _ = D.draw_S(ds, D.authors_s_size(net), rng=_seq(seed, 4))
        extra = ds.X_train[np.random.default_rng(seed + 100).choice(len(ds.y_train), 1000, replace=False)]
        calib = np.concatenate([X_S, extra])
        rows.append(dict(seed=seed, method="dense", keep=1.0, acc=T.accuracy(net, ds.X_test, ds.y_test)))
        for keep in KEEPS:
            B = int(round(keep * net.n_weights))
            runs = {
                "sipp-hybrid": lambda: sp.prune(net, X_S, budget=B, method="hybrid", rng=seed),
                "sipp-hybrid+ls(S)": lambda: sp.prune(net, X_S, budget=B, method="hybrid", rng=seed, reconstruct=True),
                "sipp-hybrid+ls": lambda: sp.prune(net, X_S, budget=B, method="hybrid", rng=seed, reconstruct=True,
                                                   calibration=extra),
                "magnitude-global": lambda: prune_baseline(net, X_S, budget=B, method="magnitude-global"),
                "magnitude-global+ls": lambda: prune_baseline(net, X_S, budget=B, method="magnitude-global",
                                                              reconstruct=True, calibration=extra),
                "wanda": lambda: prune_baseline(net, X_S, budget=B, method="wanda"),
                "wanda+ls": lambda: prune_baseline(net, X_S, budget=B, method="wanda", reconstruct=True,
                                                   calibration=extra),
                "obs(S)": lambda: prune_obs(net, X_S, budget=B),
                "obs": lambda: prune_obs(net, calib, budget=B),
                "obs lam=1e-4": lambda: prune_obs(net, calib, budget=B, lam=1e-4),
                "obs+ls": lambda: prune_baseline(net, X_S, budget=B, method="obs", reconstruct=True,
                                                 calibration=extra, lam=1e-4),
            }
            for name, fn in runs.items():
                t0 = time.perf_counter()
                res = fn()
                rows.append(dict(seed=seed, method=name, keep=keep, acc=T.accuracy(res.network, ds.X_test, ds.y_test),
                                 seconds=time.perf_counter() - t0))
    with open(out_path, "w") as fh:
        json.dump(rows, fh)
    return rows


def table(rows) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"))
    dense = [r["acc"] for r in rows if r["method"] == "dense"]
    lines = [f"dense {100 * np.mean(dense):.1f}% ({len(dense)} seeds); test accuracy %, mean ± std over seeds",
             "| method | " + " | ".join(f"keep {k}" for k in KEEPS) + " |", "|---|" + "---|" * len(KEEPS)]
    for m in methods:
        cells = []
        for k in KEEPS:
            a = [r["acc"] for r in rows if r["method"] == m and r["keep"] == k]
            cells.append(f"{100 * np.mean(a):.1f} ± {100 * np.std(a):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    seeds = [int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "0,1,2").split(",")]
    print(table(run(seeds, sys.argv[2] if len(sys.argv) > 2 else "refit_accuracy.json")))
