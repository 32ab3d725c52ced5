"""Benchmark of sparsify on Dask: a dask-array S, and an experiment sweep on local workers.

Run as ``python -m benchmarks.distributed`` (or ``python -m benchmarks --distributed``);
``--quick`` uses 50,000 points and a smaller sweep, ``--workers N`` (default 2),
``--json OUT`` writes every number.

1. Sensitivities of S with 200,000 points, a dask array whose chunks are made on
   the workers, on a LocalCluster of N single-threaded worker processes, against
   the in-memory streamed step in this process (all cores, Numba's threads).
   Both results are compared byte for byte. The in-memory step is also timed
   on one Numba thread: on a loaded machine a parallel region waits for its
   slowest thread, and one descheduled thread stalls all of them.
2. An experiment sweep (every cell a task) serially (no cluster alive) and on a
   fresh LocalCluster of N workers, the two alternating ``--repeats`` times; the ratio of the medians serial /
   distributed, with and without the cluster's start-up (both sides warmed
   first by a one-seed run, so no side pays for compilation). The rows are
   compared with the serial run's (without the measured seconds).

Every timed call follows an untimed warm-up (JIT compilation and cache loading
excluded). The load average is printed: on a shared machine the ratios are only
as good as the cores that were free.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def bench_sensitivity(client, n_points: int, repeats: int) -> dict:
    import numba
    from dask import array as da

    import sparsify as sp

    widths = [256, 256, 128, 10]
    net = sp.random_mlp(widths, rng=0, dtype=np.float32)
    rows = 16384
    Xd = da.random.default_rng(0).standard_normal((n_points, widths[0]), chunks=(rows, widths[0]),
                                                  dtype=np.float32)
    X = Xd.compute()  # the same points, in this process
    sp.sensitivity(net, X[:2048])  # warm-up (compilation, cache)
    sp.sensitivity(net, Xd[:rows], dask=client)
    t_mem, t_one, t_dask = [], [], []
    threads = numba.get_num_threads()
    for _ in range(repeats):
        t0 = time.perf_counter()
        s_mem = sp.sensitivity(net, X)
        t_mem.append(time.perf_counter() - t0)
        numba.set_num_threads(1)
        t0 = time.perf_counter()
        sp.sensitivity(net, X)
        t_one.append(time.perf_counter() - t0)
        numba.set_num_threads(threads)
        t0 = time.perf_counter()
        s_dask = sp.sensitivity(net, Xd, dask=client)
        t_dask.append(time.perf_counter() - t0)
    same = all(a.tobytes() == b.tobytes() for a, b in zip(s_mem, s_dask))
    return dict(points=n_points, widths=widths, dtype="float32", chunk_rows=rows, in_memory_s=t_mem,
                in_memory_threads=threads, in_memory_one_thread_s=t_one, dask_s=t_dask,
                ratio=float(np.median(t_mem) / np.median(t_dask)), identical=bool(same))


def _sweep_config(quick: bool):
    from sparsify import experiment as E

    return E.ExperimentConfig.from_dict(dict(
        data="digits", hidden=[300, 100], epochs=10 if quick else 30, retrain_epochs=3 if quick else 10, milestones=[],
        retrain_milestones=[], methods=["sipp-det", "sipp-hybrid", "magnitude-global", "snip"],
        keeps=[0.5, 0.2, 0.1] if quick else [0.5, 0.3, 0.2, 0.1], seeds=[0, 1], s_size=64, lottery=False))


def bench_sweep(n_workers: int, quick: bool, repeats: int) -> dict:
    from distributed import Client

    from sparsify import experiment as E
    from sparsify.distributed import local_cluster

    cfg = _sweep_config(quick)
    warm = E.ExperimentConfig.from_dict({**cfg.to_dict(), "seeds": [99], "epochs": 1, "retrain_epochs": 1})
    t_serial, t_dask, same = [], [], []

    def strip(rows):
        return [{k: repr(v) for k, v in r.items() if not k.endswith("seconds")} for r in rows]

    t_start, t_warm = [], []
    with tempfile.TemporaryDirectory() as tmp:
        # warm the kernels here so that no run is charged for compilation
        E.run_experiment(warm, Path(tmp) / "warm", log=io.StringIO(), plots=False)
        # serial and distributed runs alternate, so that a slow spell of a shared machine falls
        # on both sides rather than on one; the serial runs go without a cluster alive (an idle
        # local cluster measured 15% slower serial runs: its scheduler and workers wake up often)
        for r in range(repeats):
            t1 = time.perf_counter()
            serial = E.run_experiment(cfg, Path(tmp) / f"serial{r}", log=io.StringIO(), plots=False)
            t_serial.append(time.perf_counter() - t1)
            t0 = time.perf_counter()
            with local_cluster(n_workers, dashboard_address=":0") as cluster, \
                    Client(cluster, set_as_default=False) as client:
                t_start.append(time.perf_counter() - t0)
                E.run_experiment(warm, Path(tmp) / f"warm-dask{r}", log=io.StringIO(), plots=False, dask=client)
                t_warm.append(time.perf_counter() - t0)
                t1 = time.perf_counter()
                dist = E.run_experiment(cfg, Path(tmp) / f"dask{r}", log=io.StringIO(), plots=False, dask=client)
                t_dask.append(time.perf_counter() - t1)
            same.append(strip(serial.rows) == strip(dist.rows))
    ratios = [a / b for a, b in zip(t_serial, t_dask)]
    return dict(cells=len(serial.rows), serial_s=t_serial, cluster_start_s=t_start, warm_up_s=t_warm, dask_s=t_dask,
                ratios=ratios, ratio=float(np.median(t_serial) / np.median(t_dask)),
                ratio_with_start=float(np.median(t_serial) / (np.median(t_dask) + np.median(t_warm))),
                identical_rows=all(same))


def report(res: dict) -> str:
    s, w = res["sensitivity"], res["sweep"]
    lines = [
        f"date {res['date']}, {res['cores']} cores, load average {res['load_start']} -> {res['load_end']}",
        f"sensitivity, dask array S of {s['points']:,} points, {'x'.join(map(str, s['widths']))} {s['dtype']}, "
        f"chunks of {s['chunk_rows']} points:",
        f"  in memory (streamed, this process, {s['in_memory_threads']} Numba threads) median "
        f"{np.median(s['in_memory_s']):.2f} s (1 thread: {np.median(s['in_memory_one_thread_s']):.2f} s); "
        f"on {res['workers']} workers median {np.median(s['dask_s']):.2f} s; ratio {s['ratio']:.2f}x; "
        f"bit-identical: {s['identical']}",
        f"experiment sweep, {w['cells']} cells, {len(w['ratios'])} alternating repeats: serial median "
        f"{np.median(w['serial_s']):.2f} s; on {res['workers']} workers median {np.median(w['dask_s']):.2f} s "
        f"(+{np.median(w['cluster_start_s']):.1f} s cluster start-up, {np.median(w['warm_up_s']):.1f} s with the "
        f"warm-up run): "
        f"{w['ratio']:.2f}x (per repeat {', '.join(f'{r:.2f}' for r in w['ratios'])}; "
        f"{w['ratio_with_start']:.2f}x counting the start-up and warm-up; "
        f"target >= 1.6x on 2 free cores); same rows: {w['identical_rows']}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 points and a smaller sweep")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the sensitivity and of the sweep (default 3)")
    parser.add_argument("--json", metavar="OUT", help="also write all numbers to this JSON file")
    args = parser.parse_args(argv)
    from distributed import Client

    from sparsify.distributed import local_cluster

    res = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), cores=_cores(), workers=args.workers,
               load_start=[round(v, 1) for v in os.getloadavg()])
    with local_cluster(args.workers, dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client:
        res["sensitivity"] = bench_sensitivity(client, 50_000 if args.quick else 200_000, args.repeats)
    res["sweep"] = bench_sweep(args.workers, args.quick, args.repeats)
    res["load_end"] = [round(v, 1) for v in os.getloadavg()]
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
