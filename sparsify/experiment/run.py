"""Running the experiment: every cell of the grid, resume, and the files written at the end.

Every random choice comes from a generator seeded by (seed, purpose, method,
position on the grid) (:func:`_seq`), so a cell's result does not depend on
the order cells run in, and a resumed run reproduces a fresh one.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import data as _data
from .. import train as _train
from .._blas import single_threaded_blas
from ..io import atomic_write, save
from ..report import jsonable
from .config import ExperimentConfig
from .folder import prepare_out
from .plots import plot_results
from .refit import all_methods, is_refit
from .results import append_row, cell_key, read_results_csv, write_results_csv
from .summary import accuracy_table, commensurate_prune_ratios, dense_accuracy, format_layers, format_summary
from .stability import instability as _instability

from .setup import (_method_id, _seq, prune_with, _warm_up, _load_dataset, _initialisation, _load_cached, _s_size, _calibration_size, _calibration_points)  # noqa: F401  (re-exported for tasks and during)

__all__ = ["ExperimentResult", "finish", "prune_with", "reprune", "run_experiment"]


class _Run:
    """State of one experiment run in its output folder."""

    def __init__(self, cfg: ExperimentConfig, out: Path, log, dataset):
        self.cfg, self.out, self.log, self.ds = cfg, out, log, dataset
        self.csv = out / "results.csv"
        self.rows = read_results_csv(self.csv)
        self.done = {cell_key(r["mode"], r["method"], r["keep"], r["seed"]) for r in self.rows}
        self.grid = cfg.keep_grid()
        self.lottery_grid = cfg.lottery_grid()
        self.widths = cfg.widths(dataset.n_features, dataset.n_classes)
        self.s_size = _s_size(cfg, dataset)
        self.n_calib = _calibration_size(cfg, dataset)
        self.calib = {}
        # cached reference networks are checked before anything is written
        self.references = {seed: self.cached(self._reference_path(seed)) for seed in cfg.seeds
                           if self._reference_path(seed).exists()}
        write_results_csv(self.csv, self.rows)  # drops a half-written line so appends stay well-formed
        per_seed = len(cfg.methods) * len(self.grid) + 1 + 2 * len(self.lottery_grid)
        self.total = per_seed * len(cfg.seeds)
        self.count = 0
        self.resumed = len(self.done)

    # -- bookkeeping --
    @classmethod
    def detached(cls, cfg: ExperimentConfig, dataset, s_size: int, done=()) -> "_Run":
        """A run without a folder, for computing cells elsewhere (a Dask task): :meth:`record`
        only collects the rows, which the caller's run then records."""
        run = cls.__new__(cls)
        run.cfg, run.out, run.log, run.ds, run.csv = cfg, None, None, dataset, None
        run.rows, run.done = [], set(done)
        run.grid, run.lottery_grid = cfg.keep_grid(), cfg.lottery_grid()
        run.widths = cfg.widths(dataset.n_features, dataset.n_classes)
        run.s_size, run.references = s_size, {}
        run.n_calib, run.calib = _calibration_size(cfg, dataset), {}
        return run

    def is_done(self, mode, method, keep, seed) -> bool:
        return cell_key(mode, method, keep, seed) in self.done

    def record(self, row: dict) -> None:
        if self.csv is None:  # a detached run: the caller records the rows
            self.rows.append(row)
            return
        self.rows.append(append_row(self.csv, row))
        self.done.add(cell_key(row["mode"], row["method"], row["keep"], row["seed"]))
        self.count += 1
        drop = row["drop_after_prune"]
        drop_txt = "" if not isinstance(drop, float) or not math.isfinite(drop) else f", drop {100 * drop:+.1f}pp"
        print(f"[{self.count + self.resumed:4d}/{self.total}] {row['mode']:9s} {row['method']:17s} "
              f"keep {row['keep']:<6.3g} seed {row['seed']}: acc {100 * row['test_accuracy']:.2f}%{drop_txt}, "
              f"kept {row['kept_weights']}/{row['total_weights']}, prune {row['prune_seconds']:.3f}s",
              file=self.log, flush=True)

    def evaluate(self, net):
        acc = _train.accuracy(net, self.ds.X_test, self.ds.y_test)
        recall = _train.per_class_recall(net, self.ds.X_test, self.ds.y_test, self.ds.n_classes)
        return acc, recall

    def train_accuracy(self, net) -> float:
        return _train.accuracy(net, self.ds.X_train, self.ds.y_train)

    @staticmethod
    def row(*, method, mode, keep, seed, acc, recall, acc_pruned, acc_parent, net, prune_s=0.0,
            retrain_s=0.0, report=None, s_size=0):
        kept = [int(np.count_nonzero(w)) for w in net.weights]
        total = [int(w.size) for w in net.weights]
        layers = report.layers if report is not None else []
        return dict(
            method=method, mode=mode, keep=float(keep), seed=int(seed), test_accuracy=float(acc),
            accuracy_after_prune=float(acc_pruned), drop_after_prune=float(acc_parent - acc_pruned),
            kept_weights=sum(kept), total_weights=sum(total), keep_achieved=sum(kept) / sum(total),
            prune_seconds=float(prune_s), retrain_seconds=float(retrain_s), kept_per_layer=kept,
            total_per_layer=total, sampled_sides=int(sum(l.get("sampled_sides", 0) for l in layers)),
            det_sides=int(sum(l.get("det_sides", 0) for l in layers)),
            dead_sides=int(sum(l.get("dead_sides", 0) for l in layers)),
            allocation=report.allocation if report is not None else "", s_size=int(s_size),
            per_class_recall=[float(v) for v in recall],
        )

    # -- networks --
    def cached(self, path: Path):
        return _load_cached(self.cfg, self.ds, path)

    def initialisation(self, seed: int):
        return _initialisation(self.cfg, self.ds, _seq(seed, 0))

    def _reference_path(self, seed: int) -> Path:
        return self.out / "networks" / f"dense-seed{seed}.npz"

    def reference(self, seed: int):
        """The trained reference network of ``seed`` (loaded from ``networks/`` when cached)."""
        if seed in self.references:
            return self.references.pop(seed)
        t0 = time.perf_counter()
        net = self.train_reference(seed)
        self.save_reference(seed, net, time.perf_counter() - t0)
        return net

    def train_reference(self, seed: int):
        """Train the reference network of ``seed`` from its seeded initialisation."""
        return _train.train(self.initialisation(seed), self.ds.X_train, self.ds.y_train, rng=_seq(seed, 1),
                            **self.cfg.schedule())

    def save_reference(self, seed: int, net, seconds: float) -> None:
        path = self._reference_path(seed)
        path.parent.mkdir(exist_ok=True)
        save(net, path)
        print(f"seed {seed}: trained {net!r} in {seconds:.1f} s", file=self.log, flush=True)

    def draw_S(self, seed: int):
        """The batch S of ``seed`` (points and labels), drawn from the validation split."""
        return _data.draw_S(self.ds, self.s_size, rng=_seq(seed, 4))

    def record_dense(self, seed: int, dense, s_size: int) -> float:
        """Record the ``dense`` row of ``seed`` unless done; returns the dense accuracy."""
        dense_acc, dense_recall = self.evaluate(dense)
        if not self.is_done(self.cfg.mode, "dense", 1.0, seed):
            row = self.row(method="dense", mode=self.cfg.mode, keep=1.0, seed=seed, acc=dense_acc,
                           recall=dense_recall, acc_pruned=dense_acc, acc_parent=dense_acc, net=dense,
                           s_size=s_size)
            row["train_accuracy"] = self.train_accuracy(dense)
            self.record(row)
        return dense_acc

    # -- cells --
    def prune_cell(self, mode, method, keep, seed, parent, acc_parent, X_S, y_S, k_index):
        """Prune ``parent`` (and fine-tune in retrain/iterative mode): ``(row, network, accuracy)``."""
        cfg = self.cfg
        t0 = time.perf_counter()
        res = prune_with(method, parent, X_S, y_S, keep, _seq(seed, 2, _method_id(method), k_index),
                         delta=cfg.delta, C=cfg.C, weight_decay=cfg.weight_decay,
                         calibration=self.calib.get(seed), lam=cfg.lam)
        prune_s = time.perf_counter() - t0
        pruned = res.network
        acc_pruned, recall = self.evaluate(pruned)
        acc, net, retrain_s = acc_pruned, pruned, 0.0
        if mode in ("retrain", "iterative") and cfg.retrain_epochs > 0:
            t1 = time.perf_counter()
            net = _train.train(pruned, self.ds.X_train, self.ds.y_train, masks=[w != 0 for w in pruned.weights],
                               rng=_seq(seed, 3, _method_id(method), k_index), **cfg.retrain_schedule())
            retrain_s = time.perf_counter() - t1
            acc, recall = self.evaluate(net)
        row = self.row(method=method, mode=mode, keep=keep, seed=seed, acc=acc, recall=recall,
                       acc_pruned=acc_pruned, acc_parent=acc_parent, net=pruned, prune_s=prune_s,
                       retrain_s=retrain_s, report=res.report, s_size=len(X_S))
        row.update(train_accuracy=self.train_accuracy(net), accuracy_before_prune=float(acc_parent),
                   instability=_instability(acc_parent, acc_pruned))
        return row, net, acc

    def run_seed(self, seed: int) -> None:
        cfg = self.cfg
        dense = self.reference(seed)
        X_S, y_S = self.draw_S(seed)
        self.calib = {seed: _calibration_points(self.ds, self.n_calib, seed)}
        dense_acc = self.record_dense(seed, dense, len(X_S))
        for method in cfg.methods:
            if cfg.mode == "during":
                from .during import during_cell

                for k_index, keep in enumerate(self.grid):
                    if not self.is_done("during", method, keep, seed):
                        self.record(during_cell(self, method, keep, seed, X_S, y_S, k_index))
                continue
            if cfg.mode == "iterative":
                self.run_chain(method, seed, dense, dense_acc, X_S, y_S)
                continue
            for k_index, keep in enumerate(self.grid):
                if self.is_done(cfg.mode, method, keep, seed):
                    continue
                row, _, _ = self.prune_cell(cfg.mode, method, keep, seed, dense, dense_acc, X_S, y_S, k_index)
                self.record(row)
        for k_index, keep in enumerate(self.lottery_grid):
            self.run_lottery(seed, keep, k_index, dense, X_S, y_S)

    def run_chain(self, method, seed, dense, dense_acc, X_S, y_S) -> None:
        """The prune–retrain cascade; resumes from the checkpoint of the last finished step."""
        ckpt_dir = self.out / "networks"
        ckpt_dir.mkdir(exist_ok=True)
        start, parent, events = self.chain_start(method, seed)
        acc_parent = dense_acc if parent is None else self.evaluate(parent)[0]
        parent = dense if parent is None else parent
        for k_index, row, net in self.chain_steps(method, seed, start, parent, acc_parent, events, X_S, y_S):
            save(net, ckpt_dir / f"chain-{method}-seed{seed}-step{k_index}.npz")
            if not self.is_done("iterative", method, row["keep"], seed):
                self.record(row)
            old = ckpt_dir / f"chain-{method}-seed{seed}-step{k_index - 1}.npz"
            if old.exists():
                old.unlink()

    def chain_start(self, method, seed):
        """Where the cascade of ``(method, seed)`` resumes: ``(step, network, events)``; the
        network is None at step 0 (start from the reference); ``events`` the instability
        of each finished step (a row records their mean)."""
        for k_index in range(len(self.grid) - 1, -1, -1):
            path = self.out / "networks" / f"chain-{method}-seed{seed}-step{k_index}.npz"
            if path.exists() and all(self.is_done("iterative", method, k, seed) for k in self.grid[:k_index + 1]):
                done = {cell_key(r["mode"], r["method"], r["keep"], r["seed"]): r for r in self.rows}
                events = []
                for k in self.grid[:k_index + 1]:
                    r = done[cell_key("iterative", method, k, seed)]
                    events.append(_instability(r["accuracy_before_prune"], r["accuracy_after_prune"]))
                return k_index + 1, self.cached(path), events
        return 0, None, []

    def chain_steps(self, method, seed, start, parent, acc_parent, events, X_S, y_S):
        """The cascade's steps from ``start``: yields ``(k_index, row, network)`` per step."""
        for k_index in range(start, len(self.grid)):
            keep = self.grid[k_index]
            row, net, acc = self.prune_cell("iterative", method, keep, seed, parent, acc_parent, X_S, y_S, k_index)
            events.append(row["instability"])
            row["instability"] = float(np.mean(events))  # NaN when an earlier step predates the column
            yield k_index, row, net
            parent, acc_parent = net, acc

    def run_lottery(self, seed, keep, k_index, dense, X_S, y_S) -> None:
        """The mask of ``lottery_method`` and a random mask with its per-layer counts, trained from init."""
        cfg = self.cfg
        method = cfg.lottery_method
        if self.is_done("lottery", method, keep, seed) and self.is_done("lottery", "random", keep, seed):
            return
        init = self.initialisation(seed)
        t0 = time.perf_counter()
        res = prune_with(method, dense, X_S, y_S, keep, _seq(seed, 2, _method_id(method), 1000 + k_index),
                         delta=cfg.delta, C=cfg.C, weight_decay=cfg.weight_decay,
                         calibration=self.calib.get(seed), lam=cfg.lam)
        prune_s = time.perf_counter() - t0
        sipp_masks = [w != 0 for w in res.network.weights]
        gen = _seq(seed, 5, k_index)
        rand_masks = []
        for m in sipp_masks:  # same kept count per layer, positions uniformly at random
            flat = np.zeros(m.size, bool)
            flat[gen.choice(m.size, size=int(m.sum()), replace=False)] = True
            rand_masks.append(flat.reshape(m.shape))
        for name, masks, seconds in ((method, sipp_masks, prune_s), ("random", rand_masks, 0.0)):
            if self.is_done("lottery", name, keep, seed):
                continue
            ticket = init.with_weights([np.where(m, w, 0) for m, w in zip(masks, init.weights)])
            acc_ticket, _ = self.evaluate(ticket)
            t1 = time.perf_counter()
            net = _train.train(ticket, self.ds.X_train, self.ds.y_train, masks=masks, rng=_seq(seed, 1),
                               **cfg.schedule())
            acc, recall = self.evaluate(net)
            row = self.row(method=name, mode="lottery", keep=keep, seed=seed, acc=acc, recall=recall,
                           acc_pruned=acc_ticket, acc_parent=acc_ticket, net=ticket, prune_s=seconds,
                           retrain_s=time.perf_counter() - t1, report=res.report if name == method else None,
                           s_size=len(X_S))
            row["drop_after_prune"] = float("nan")
            row["train_accuracy"] = self.train_accuracy(net)
            self.record(row)


def reprune(config: ExperimentConfig, out_dir, method: str, keep: float, seed: int, dataset=None):
    """Repeat the pruning of one finished cell: same network, same S, same random numbers.

    ``keep`` must be on the run's grid. Returns ``(PruneResult, X_S)``; used by
    the demo to print the per-layer report of a run.
    """
    grid = config.keep_grid()
    matches = [i for i, k in enumerate(grid) if abs(k - float(keep)) < 1e-9]
    if not matches:
        raise ValueError(f"keep: {keep} is not on the run's grid {grid}; pick one of those.")
    path = Path(out_dir) / "networks" / f"dense-seed{seed}.npz"
    if not path.exists():
        raise ValueError(f"seed: {str(path)!r} does not exist; run the experiment for seed {seed} first.")
    ds = dataset if dataset is not None else _load_dataset(config)
    dense = _load_cached(config, ds, path)
    X_S, y_S = _data.draw_S(ds, _s_size(config, ds), rng=_seq(seed, 4))
    calibration = _calibration_points(ds, config.calibration if is_refit(method) else 0, seed)
    res = prune_with(method, dense, X_S, y_S, grid[matches[0]], _seq(seed, 2, _method_id(method), matches[0]),
                     delta=config.delta, C=config.C, weight_decay=config.weight_decay,
                     calibration=calibration, lam=config.lam)
    return res, X_S


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: the rows (all finished cells), the summary text, the plots."""

    out_dir: Path
    rows: list
    summary: str
    plots: list


def run_experiment(config: ExperimentConfig, out_dir, *, log=None, plots: bool = True,
                   dask=None) -> ExperimentResult:
    """Run (or resume) the experiment described by ``config`` in ``out_dir``.

    Finished cells found in ``out_dir/results.csv`` are not redone; the folder's
    ``config.json`` must match ``config``. Every setting, the size of S against
    the data and the folder are checked before anything is trained or written.
    Progress lines go to ``log`` (default: stderr). Returns the rows of all
    finished cells and the summary. BLAS runs single-threaded meanwhile
    (:func:`sparsify._blas.single_threaded_blas`): the experiment multiplies
    small matrices (a minibatch of 64 by a few hundred units), where a
    multithreaded BLAS only adds synchronisation and its spinning threads slow
    training down.

    ``dask`` (default: the config's ``dask``): None runs the cells here, one after
    the other; ``"local"``, ``"local:N"``, a scheduler address ``"tcp://HOST:PORT"``
    or a ``distributed.Client`` runs every cell as a task
    (:mod:`sparsify.experiment.tasks`), with the same rows and the same resume.
    """
    with single_threaded_blas():
        return _run_experiment(config, Path(out_dir), sys.stderr if log is None else log, plots, dask)


def _run_experiment(config, out: Path, log, plots: bool, dask=None) -> ExperimentResult:
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config: expected an ExperimentConfig, got {type(config).__name__}.")
    config.check()
    where = config.dask if dask is None else dask
    if where is not None:
        from ..distributed import check_dask

        where = check_dask(where)
    dataset = _load_dataset(config)
    _s_size(config, dataset)  # refuse an S larger than the data before writing anything
    _calibration_size(config, dataset)
    prepare_out(out, config.to_dict())
    run = _Run(config, out, log, dataset)
    print(f"data {dataset.describe()}; mode {config.mode}; {len(config.methods)} methods x "
          f"{len(run.grid)} keeps x {len(config.seeds)} seeds" + (f"; resuming with {run.resumed} cells done"
                                                                    if run.resumed else ""),
          file=log, flush=True)
    if where is not None:  # every cell a task
        from ..distributed import connect
        from .tasks import run_on_dask

        with connect(where) as client:
            run_on_dask(run, client)
        return finish(run.rows, config, out, dataset.describe(), plots=plots)
    needed = set(config.methods) | ({config.lottery_method} if config.lottery else set())
    _warm_up([m for m in all_methods() if m in needed], log, config.model)
    for seed in config.seeds:
        run.run_seed(seed)
    return finish(run.rows, config, out, dataset.describe(), plots=plots)


def finish(rows, config: ExperimentConfig, out: Path, data_description: str = "",
           plots: bool = True) -> ExperimentResult:
    """Write ``summary.txt``, ``results.json`` and the plots from the finished rows."""
    summary = format_summary(rows)
    layers = format_layers(rows, config.mode)
    text = summary + ("\n\n" + layers if layers else "") + "\n"
    atomic_write(out / "summary.txt", lambda fh: fh.write(text.encode("utf-8")))
    ratios = commensurate_prune_ratios(rows)
    doc = {
        "config": config.to_dict(),
        "data": data_description,
        "dense_accuracy": dense_accuracy(rows),
        "commensurate_prune_ratio": [
            {"mode": mode, "method": method, **{f"within_{100 * t:g}pp": v for t, v in r.items()}}
            for (mode, method), r in sorted(ratios.items())
        ],
        "accuracy": [
            {"mode": mode, "method": method, "keep": keep, "mean": mean, "std": std, "n": n}
            for (mode, method, keep), (mean, std, n) in sorted(accuracy_table(rows).items())
        ],
        "rows": rows,
    }
    payload = json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n"
    atomic_write(out / "results.json", lambda fh: fh.write(payload.encode("utf-8")))
    written = plot_results(rows, out, title=data_description.split(":")[0]) if plots else []
    if config.analyses:
        from .analysis_output import write_analyses

        extra, files = write_analyses(rows, out, config.analyses, title=data_description.split(":")[0],
                                      plots=plots)
        text, written = text + "\n" + extra, written + files
    return ExperimentResult(out, rows, text, written)
