"""Setting up an experiment run: data, S, calibration points, initialisations, cached
networks, the seeded random streams and the pruning call of each method."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import data as _data
from .. import train as _train
from ..bounds import DEFAULT_C, DEFAULT_DELTA
from .config import SIPP_METHODS, ExperimentConfig
from . import models as _models
from .folder import load_cached_network
from .refit import is_refit, method_id, prune_refit

__all__ = ["prune_with"]


def _method_id(method: str) -> int:
    return method_id(method)


def _seq(*parts) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative ints (order-independent of the run)."""
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


def prune_with(method: str, network, X_S, y_S, keep: float, rng, *, delta: float, C: float,
               weight_decay: float | None = None, calibration=None, lam: float | None = None):
    """Prune with an experiment method name; returns the :class:`~sparsify.prune.PruneResult`.

    ``weight_decay`` (the training weight decay) is the lambda of the ``undecayed`` score.
    ``calibration`` (extra points after S) and ``lam`` (relative ridge) serve the
    refit methods only (:mod:`sparsify.experiment.refit`).
    """
    from ..baselines import prune_baseline
    from ..prune import prune

    budget = max(1, int(round(keep * network.n_weights)))
    budget = min(budget, max(1, int(sum(np.count_nonzero(w) for w in network.weights))))
    if is_refit(method):
        return prune_refit(method, network, X_S, y_S, budget, rng, delta=delta, C=C, calibration=calibration,
                           lam=lam, weight_decay=weight_decay)
    if method in SIPP_METHODS:
        sipp_method, allocation = SIPP_METHODS[method]
        return prune(network, X_S, budget=budget, method=sipp_method, allocation=allocation, rng=rng,
                     delta=delta, C=C)
    if method == "undecayed" and weight_decay is not None:
        return prune_baseline(network, X_S, budget=budget, method=method, y_S=y_S, rng=rng,
                              weight_decay=weight_decay)
    return prune_baseline(network, X_S, budget=budget, method=method, y_S=y_S, rng=rng)


def _warm_up(methods, log, model: str = "mlp") -> None:
    """Compile the Numba kernels before anything is timed."""
    from ..network import random_mlp

    net = random_mlp([6, 5, 3], rng=0)
    X = np.random.default_rng(0).standard_normal((8, 6))
    y = np.arange(8) % 3
    t0 = time.perf_counter()
    for method in methods:
        prune_with(method, net, X, y, 0.5, 0, delta=DEFAULT_DELTA, C=DEFAULT_C)
    if model != "mlp":  # the patch paths of the convolutional models
        conv = _models.init_model(model, 64, 3, rng=0)
        images = np.random.default_rng(0).standard_normal((8, 1, 8, 8))
        for method in methods:
            prune_with(method, conv, images, y, 0.5, 0, delta=DEFAULT_DELTA, C=DEFAULT_C)
    dt = time.perf_counter() - t0
    if dt > 1.0:
        print(f"compiled pruning kernels in {dt:.1f} s (not counted in prune_seconds)", file=log, flush=True)


def _load_dataset(cfg: ExperimentConfig):
    """The run's dataset, with the training split made class-imbalanced when ``imbalance`` asks;
    flat features for the MLP, ``(n, 1, s, s)`` images for a convolutional model."""
    from .during import imbalance_dataset

    ds = _data.load_dataset(cfg.data, rng=cfg.data_seed)
    ds = imbalance_dataset(ds, cfg.imbalance, cfg.data_seed, cfg.label("imbalance"))
    return ds if cfg.model == "mlp" else _models.as_images(ds)


def _initialisation(cfg: ExperimentConfig, dataset, rng):
    if cfg.model == "mlp":
        return _train.init_mlp(cfg.widths(dataset.n_features, dataset.n_classes), cfg.activation, rng=rng)
    return _models.init_model(cfg.model, dataset.n_features, dataset.n_classes, rng=rng)


def _load_cached(cfg: ExperimentConfig, dataset, path: Path):
    """A network the run saved, refused (as a stale file to delete) if it does not fit the run."""
    if cfg.model == "mlp":
        return load_cached_network(path, cfg.widths(dataset.n_features, dataset.n_classes), cfg.activation)
    from ..io import load

    try:
        net = load(path)
    except ValueError as exc:
        raise ValueError(f"out: cached network {str(path)!r} is unreadable ({exc}); delete it "
                         f"(rm {str(path)!r}) and run again to rebuild it.") from None
    return _models.check_cached_model(path, net, _initialisation(cfg, dataset, 0))


def _s_size(cfg: ExperimentConfig, dataset) -> int:
    """Points in S: ``s_size``, or the authors' size for the run's network; refused if the data has too few."""
    shape = (cfg.widths(dataset.n_features, dataset.n_classes) if cfg.model == "mlp"
             else _initialisation(cfg, dataset, 0))
    size = cfg.s_size or _data.authors_s_size(shape, cfg.delta)
    n_val = len(dataset.y_val)
    if size > n_val:
        what = f"{cfg.label('s_size')} = {size}" if cfg.s_size else f"the authors' size of S ({size} points)"
        raise ValueError(
            f"{cfg.label('s_size')}: S is drawn from the validation split, which has only {n_val} points "
            f"({dataset.describe()}), fewer than {what}; pass a smaller {cfg.label('s_size')} "
            f"(at most {n_val})."
        )
    return size


def _calibration_size(cfg: ExperimentConfig, dataset) -> int:
    """Training points added to S by the refit methods (0 without one); refused if the split is smaller."""
    needed = [m for m in cfg.methods + ([cfg.lottery_method] if cfg.lottery else []) if is_refit(m)]
    if not needed:
        return 0
    n_train = len(dataset.y_train)
    if cfg.calibration > n_train:
        raise ValueError(
            f"{cfg.label('calibration')}: the refit methods {needed} draw their extra calibration points from "
            f"the training split, which has only {n_train} points ({dataset.describe()}), fewer than "
            f"{cfg.calibration}; pass a smaller {cfg.label('calibration')} (at most {n_train}; 0 = S alone)."
        )
    return cfg.calibration


def _calibration_points(dataset, n: int, seed: int):
    """``n`` training points of ``seed`` (the same for every method and keep), or None for n = 0."""
    if not n:
        return None
    index = _seq(seed, 8).choice(len(dataset.y_train), size=n, replace=False)
    return dataset.X_train[np.sort(index)]
