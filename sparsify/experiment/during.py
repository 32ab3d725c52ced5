"""Mode ``during``: prune while the network trains, and class-imbalanced training data.

A ``during`` cell trains the seed's initialisation with the full schedule and
prunes it at the start of every ``prune_every``-th epoch; the kept fraction
steps geometrically from 1 to the cell's target, which the last event reaches
(:func:`~sparsify.experiment.stability.prune_schedule`). Between events the
mask is fixed. The learning-rate schedule is the reference network's, epoch for
epoch; momentum restarts at each event (the pruned weights' velocity is void).
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from .. import train as _train
from .stability import instability, prune_schedule

__all__ = ["during_cell", "imbalance_dataset", "segment_schedule"]


def segment_schedule(schedule: dict, start: int, stop: int) -> dict:
    """The keyword arguments of :func:`sparsify.train.train` for epochs ``start .. stop - 1`` of ``schedule``.

    The learning rate of global epoch ``e`` is ``lr * gamma ** (milestones <= e)`` in
    both, so training in segments follows the same step schedule.
    """
    milestones = list(schedule["milestones"])
    lr = schedule["lr"] * schedule["gamma"] ** sum(1 for m in milestones if m <= start)
    return dict(schedule, epochs=stop - start, lr=lr, milestones=[m - start for m in milestones if m > start])


def during_cell(run, method: str, keep: float, seed: int, X_S, y_S, k_index: int) -> dict:
    """Train from the seed's initialisation, pruning at the events of ``run.cfg``; return the row."""
    from .run import _method_id, _seq, prune_with

    cfg, ds = run.cfg, run.ds
    events = cfg.prune_events()
    keeps = prune_schedule(keep, len(events))
    bounds = [0, *events, cfg.epochs]
    net, masks, pruned, report = run.initialisation(seed), None, None, None
    drops, prune_s, train_s = [], 0.0, 0.0
    acc_before = acc_after = float("nan")
    mid = _method_id(method)
    for j in range(len(bounds) - 1):
        if j:
            acc_before = run.evaluate(net)[0]
            t0 = time.perf_counter()
            res = prune_with(method, net, X_S, y_S, keeps[j - 1], _seq(seed, 6, mid, k_index, j),
                             delta=cfg.delta, C=cfg.C, weight_decay=cfg.weight_decay,
                             calibration=run.calib.get(seed), lam=cfg.lam)  # used by refit methods only
            prune_s += time.perf_counter() - t0
            pruned, report = res.network, res.report
            acc_after = run.evaluate(pruned)[0]
            drops.append(instability(acc_before, acc_after))
            net, masks = pruned, [w != 0 for w in pruned.weights]
        t1 = time.perf_counter()
        net = _train.train(net, ds.X_train, ds.y_train, masks=masks, rng=_seq(seed, 7, mid, k_index, j),
                           **segment_schedule(cfg.schedule(), bounds[j], bounds[j + 1]))
        train_s += time.perf_counter() - t1
    acc, recall = run.evaluate(net)
    row = run.row(method=method, mode="during", keep=keep, seed=seed, acc=acc, recall=recall,
                  acc_pruned=acc_after, acc_parent=acc_before, net=pruned, prune_s=prune_s, retrain_s=train_s,
                  report=report, s_size=len(X_S))
    finite = [d for d in drops if math.isfinite(d)]
    row.update(train_accuracy=run.train_accuracy(net), accuracy_before_prune=acc_before,
               instability=float(np.mean(finite)) if finite else float("nan"))
    return row


def imbalance_dataset(dataset, imbalance: dict, seed: int = 0, name: str = "imbalance"):
    """``dataset`` with the training points of ``imbalance["classes"]`` subsampled by ``imbalance["factor"]``.

    Each named class keeps ``ceil(n_c / factor)`` of its ``n_c`` training points
    (a seeded random subset, at least one). The validation and test splits, and
    the standardisation (measured on the full training split), are unchanged.
    ``{}`` returns ``dataset`` itself.
    """
    if not imbalance:
        return dataset
    classes, factor = imbalance["classes"], float(imbalance["factor"])
    bad = [c for c in classes if c >= dataset.n_classes]
    if bad:
        raise ValueError(f"{name}: class(es) {bad} do not exist; {dataset.name} has classes 0..{dataset.n_classes - 1}.")
    gen = np.random.default_rng(np.random.SeedSequence([int(seed), 8]))
    keep = np.ones(len(dataset.y_train), dtype=bool)
    for c in classes:
        idx = np.flatnonzero(dataset.y_train == c)
        n_keep = max(1, math.ceil(idx.size / factor)) if idx.size else 0
        drop = gen.permutation(idx)[n_keep:]
        keep[drop] = False
    label = ",".join(str(c) for c in classes)
    return dataclasses.replace(dataset, name=f"{dataset.name} (train classes {label} / {factor:g})",
                               X_train=dataset.X_train[keep], y_train=dataset.y_train[keep])
