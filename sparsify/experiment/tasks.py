"""The experiment's cells as Dask tasks (``run_experiment(..., dask=...)``, ``--dask``).

Units of work, each one task: the training of a seed's reference network; a
cell ``(method, keep, seed)`` of the oneshot and retrain modes; the whole
prune–retrain cascade of ``(method, seed)`` in iterative mode (its steps depend
on each other); the lottery panel at one kept fraction (its two cells share one
pruning). The references are spread over the workers; when one is trained (or,
cached in ``networks/``, at once) the client records its row and sends it to
every worker, and the seed's cells are submitted with it and its accuracy. A
copy on every worker lets the scheduler place cells by load: with the one copy
on the worker that trained it, the cells queued there while the other workers
waited.

The client records every finished row in ``results.csv`` through the same
:meth:`_Run.record` as a serial run (the same progress line, the same resume),
saves the trained networks and the last step of each cascade in ``networks/``,
and at the end orders the rows (rewriting ``results.csv`` atomically) as a serial
run would. Every random number of a
cell comes from a generator seeded by the cell itself, so results do not depend
on where or in which order cells run: the rows equal a serial run's, apart from
the measured seconds. A unit that fails is reported with the worker's traceback;
the other units go on, and :class:`CellsFailed` names the failures at the end.
"""
from __future__ import annotations

import os
import time
import traceback

from .._blas import single_threaded_blas
from .results import cell_key, write_results_csv
from .run import _calibration_points, _Run, _warm_up

__all__ = ["CellsFailed", "run_on_dask"]


class CellsFailed(RuntimeError):
    """Some units of a distributed run failed; the message names them (rows of the others are recorded)."""


def _warm_worker(methods) -> None:
    """Compile the pruning kernels on a worker before any cell is timed (an error here shows
    again, with its traceback, in the cells that hit it)."""
    try:
        with open(os.devnull, "w") as log:
            _warm_up(methods, log)
    except Exception:  # noqa: BLE001 - reported by the cells
        pass


def _unit(shared, dense, dense_acc, unit, done, plan):
    """Run one unit on a worker; returns ``(rows, network)`` (network: the cascade's last step,
    else None), or for a reference ``(network, seconds)``. ``dense`` is the seed's reference
    network and ``dense_acc`` its test accuracy (as the client recorded it); both None for a
    reference unit."""
    from ..distributed import limited_threads, settled

    cfg, dataset, s_size = settled(shared, cache=True)
    dense = None if dense is None else settled(dense, cache=True)
    unit = settled(unit)  # arrays in memory of their own (see settled)
    run = _Run.detached(cfg, dataset, s_size, done)
    kind, seed = unit[0], unit[1]
    with limited_threads(plan), single_threaded_blas():
        if kind == "reference":
            t0 = time.perf_counter()
            net = run.train_reference(seed)
            return net, time.perf_counter() - t0
        X_S, y_S = run.draw_S(seed)
        run.calib = {seed: _calibration_points(run.ds, run.n_calib, seed)}  # the refit methods' extra points
        if kind == "cell":
            method, k_index = unit[2], unit[3]
            row, _, _ = run.prune_cell(cfg.mode, method, run.grid[k_index], seed, dense, dense_acc, X_S, y_S,
                                       k_index)
            return [row], None
        if kind == "chain":
            method, start, parent, events = unit[2], unit[3], unit[4], list(unit[5])
            acc_parent = dense_acc if parent is None else run.evaluate(parent)[0]
            parent = dense if parent is None else parent
            for _, row, parent in run.chain_steps(method, seed, start, parent, acc_parent, events, X_S, y_S):
                if not run.is_done("iterative", method, row["keep"], seed):
                    run.record(row)
            return run.rows, parent
        if kind == "during":
            from .during import during_cell

            method, k_index = unit[2], unit[3]
            return [during_cell(run, method, run.grid[k_index], seed, X_S, y_S, k_index)], None
        run.run_lottery(seed, run.lottery_grid[unit[2]], unit[2], dense, X_S, y_S)  # kind == "lottery"
        return run.rows, None


def _describe(run: _Run, unit) -> str:
    kind, seed = unit[0], unit[1]
    if kind == "reference":
        return f"the reference network of seed {seed}"
    if kind in ("cell", "during"):
        return f"cell ({run.cfg.mode}, {unit[2]}, keep {run.grid[unit[3]]:g}, seed {seed})"
    if kind == "chain":
        return f"cascade (iterative, {unit[2]}, seed {seed}) from step {unit[3]}"
    return f"lottery cells ({run.cfg.lottery_method} and random, keep {run.lottery_grid[unit[2]]:g}, seed {seed})"


def _units(run: _Run, seed: int) -> list:
    """The units of ``seed`` that still have a cell to compute, in the serial order."""
    cfg, out = run.cfg, []
    for method in cfg.methods:
        if cfg.mode == "iterative":
            start, parent, events = run.chain_start(method, seed)
            if start < len(run.grid):
                out.append(("chain", seed, method, start, parent, events))
            continue
        out.extend(("during" if cfg.mode == "during" else "cell", seed, method, k) for k, keep in enumerate(run.grid)
                   if not run.is_done(cfg.mode, method, keep, seed))
    for k, keep in enumerate(run.lottery_grid):
        if not all(run.is_done("lottery", name, keep, seed) for name in (cfg.lottery_method, "random")):
            out.append(("lottery", seed, k))
    return out


def serial_order(run: _Run) -> dict:
    """Cell key -> position of the cell in a serial run."""
    cfg, keys = run.cfg, []
    for seed in cfg.seeds:
        keys.append(cell_key(cfg.mode, "dense", 1.0, seed))
        keys.extend(cell_key(cfg.mode, m, k, seed) for m in cfg.methods for k in run.grid)
        for k in run.lottery_grid:
            keys.extend([cell_key("lottery", cfg.lottery_method, k, seed), cell_key("lottery", "random", k, seed)])
    return {key: i for i, key in enumerate(keys)}


def run_on_dask(run: _Run, client) -> None:
    """Compute every unfinished unit of ``run`` on ``client``'s workers, recording rows as they come.

    Raises :class:`CellsFailed` after the other units have finished if any unit failed.
    """
    from distributed import as_completed

    from ..distributed import thread_plan
    from .config import METHODS

    cfg, log = run.cfg, run.log
    plan = thread_plan(client)
    needed = set(cfg.methods) | ({cfg.lottery_method} if cfg.lottery else set())
    client.run(_warm_worker, [m for m in METHODS if m in needed])
    shared = client.scatter((cfg, run.ds, run.s_size), broadcast=True, hash=False)  # the data travels once
    tag = os.urandom(4).hex()
    done = frozenset(run.done)
    futures, units = {}, {}
    pending = as_completed([], loop=client.loop)
    workers = sorted(plan)

    def submit(unit, dense=None, dense_acc=None, **where):
        fut = client.submit(_unit, shared, dense, dense_acc, unit, done, plan, pure=False,
                            key=f"sparsify-experiment-{unit[0]}-{len(futures)}-{tag}", **where)
        futures[fut.key], units[fut.key] = fut, unit
        pending.add(fut)

    def submit_cells(seed, dense):
        # The client knows the network: record its row, send it to every worker once (so that
        # the scheduler places the seed's cells by load, not next to one copy), and pass its
        # accuracy along instead of measuring it again in every cell.
        dense_acc = run.record_dense(seed, dense, run.s_size)
        shared_dense = client.scatter(dense, broadcast=True, hash=False)
        for unit in _units(run, seed):
            submit(unit, shared_dense, dense_acc)

    for i, seed in enumerate(cfg.seeds):
        if seed in run.references:  # cached in networks/
            submit_cells(seed, run.references.pop(seed))
        else:  # the references go round the workers (a hint: a busy worker's share is taken by others)
            hint = dict(workers=[workers[i % len(workers)]], allow_other_workers=True) if workers else {}
            submit(("reference", seed), **hint)

    failures = []
    try:
        for fut in pending:
            unit = units[fut.key]
            if fut.status == "error":
                exc, tb = fut.exception(), fut.traceback()
                text = "".join(traceback.format_exception(type(exc), exc, tb)) if tb is not None else repr(exc)
                failures.append(_describe(run, unit))
                if unit[0] == "reference":
                    failures.append(f"every cell of seed {unit[1]} (they need its reference network)")
                print(f"FAILED: {_describe(run, unit)} on a worker:\n{text}", file=log, flush=True)
                continue
            rows, net = fut.result()
            fut.release()
            if unit[0] == "reference":
                dense, seconds = rows, net
                run.save_reference(unit[1], dense, seconds)
                submit_cells(unit[1], dense)
                continue
            for row in rows:
                run.record(row)
            if unit[0] == "chain":
                _save_chain_end(run, unit[2], unit[1], net)
    finally:
        client.cancel([f for f in futures.values() if not f.done()])
    order = serial_order(run)
    run.rows.sort(key=lambda r: order.get(cell_key(r["mode"], r["method"], r["keep"], r["seed"]), len(order)))
    write_results_csv(run.csv, run.rows)  # atomically, in the order of a serial run
    if failures:
        raise CellsFailed(f"{len(failures)} unit(s) failed (rows of the others are in {run.csv}; run again to "
                          "retry only what is missing): " + "; ".join(failures))


def _save_chain_end(run: _Run, method: str, seed: int, net) -> None:
    """Keep the cascade's last step in ``networks/`` (as a serial run does) and drop older steps."""
    from ..io import save

    ckpt = run.out / "networks"
    ckpt.mkdir(exist_ok=True)
    last = len(run.grid) - 1
    save(net, ckpt / f"chain-{method}-seed{seed}-step{last}.npz")
    for k in range(last):
        old = ckpt / f"chain-{method}-seed{seed}-step{k}.npz"
        if old.exists():
            old.unlink()
