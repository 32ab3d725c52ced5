"""Performance benchmark of sparsify's sensitivity step.

Run as ``python benchmarks/run.py`` or ``python -m benchmarks``; ``--quick``
uses fewer repeats and smaller streams, ``--json OUT`` also writes every raw
number. For each target it prints the measured value next to the target.

Method. Every timed function is called once before timing (JIT compilation
and cache loading excluded). A function and its baseline (a BLAS GEMM, or the
smaller problem) are then timed alternately, ``repeats`` times each, and the
ratio is the median of the per-repeat ratios, which is robust to other load on
a shared machine (the load average is printed). Each timed call is preceded by
at least SETTLE_SECONDS of untimed calls of the same function, so every call is
timed in its own steady state, as in a loop of repeated calls: OpenBLAS worker
threads busy-wait for ~0.1 s after a GEMM, and without the settling time the
GEMM baseline would slow down whatever is timed right after it. Peak memory of streaming is measured in fresh
subprocesses, both as the peak resident set size (``resource.getrusage``,
includes the interpreter, NumPy, Numba and LLVM) and as the tracemalloc peak
(NumPy's own allocations, which is what grows if a computation is not flat).
Start-up and compilation costs are measured in fresh subprocesses too.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from sparsify._blas import single_threaded_blas

ROOT = Path(__file__).resolve().parent.parent


# --- environment ---------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sparsify", "benchmarks"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "") if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _blas_info() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')} ({blas.get('openblas configuration', '').strip()})"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def _cpu_flags() -> dict:
    """AVX2 / AVX-512 as the kernel sees them (llvmlite) and as /proc/cpuinfo lists them."""
    from sparsify import _config

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import llvmlite.binding as llvm

    return {"llvm_cpu": llvm.get_host_cpu_name(),
            "avx2": "avx2" in flags, "avx512": sorted(f for f in flags if f.startswith("avx512")),
            "llvm_avx512": _config.host_has_avx512()}


def _blas_kernels() -> list:
    """Each BLAS library loaded (NumPy's and SciPy's, which Numba's np.dot calls) with the
    kernel OpenBLAS picked for this CPU (threadpoolctl's 'architecture')."""
    try:
        from threadpoolctl import threadpool_info

        from sparsify._blas import _controller

        _controller()  # loads SciPy's BLAS
        return [{"file": Path(i["filepath"]).name, "version": i.get("version"), "kernel": i.get("architecture"),
                 "threads": i.get("num_threads")} for i in threadpool_info() if i.get("user_api") == "blas"]
    except Exception as exc:  # threadpoolctl missing
        return [{"error": str(exc)}]


def _choices() -> dict:
    """The machine-dependent choices of the sensitivity step in this process."""
    from sparsify import _config, _maxtimes
    from sparsify.sensitivity import DEFAULT_TILES, Z_ROWS_PER_PART

    vb = _config.vector_bytes()
    override = os.environ.get(_config.SERIAL_WORK_ENV, "").strip().lower() not in ("", "auto")
    if override:
        serial = {"source": f"{_config.SERIAL_WORK_ENV}={os.environ[_config.SERIAL_WORK_ENV]}"}
    else:
        from sparsify._calibrate import calibrate

        cal = calibrate()
        serial = {"source": f"calibrated {cal.get('date', '?')} in {cal.get('seconds', '?')} s, cached in {cal['path']}",
                  "measured": cal["measured"]}
    serial["float64"], serial["float32"] = _config.serial_work(np.float64), _config.serial_work(np.float32)
    return {"vector_bits": 8 * vb, "register_tile": list(_maxtimes.REGISTER_TILES[vb]),
            "vector_bits_env": os.environ.get(_config.VECTOR_BITS_ENV), "serial_work": serial,
            "cache_tiles": DEFAULT_TILES, "z_rows_per_part": Z_ROWS_PER_PART,
            "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS")}}


def environment() -> dict:
    import numba

    return {
        "cpu_flags": _cpu_flags(),
        "blas_kernels": _blas_kernels(),
        "choices": _choices(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": _threading_layer(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "blas": _blas_info(),
        "loadavg_start": list(os.getloadavg()),
    }


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


# --- timing helpers ------------------------------------------------------------------
def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


#: seconds of untimed calls before each timed call (see the module docstring)
SETTLE_SECONDS = 0.15


def _settled_time(fn) -> float:
    """Call ``fn`` for at least :data:`SETTLE_SECONDS` (at least once), then time one more call."""
    end = time.perf_counter() + SETTLE_SECONDS
    fn()
    while time.perf_counter() < end:
        fn()
    return _time(fn)


def paired(fn, baseline, repeats: int) -> dict:
    """Median times of ``fn`` and ``baseline`` and the median of their per-repeat ratio."""
    fn()
    baseline()
    t_fn, t_base, ratios = [], [], []
    for _ in range(repeats):
        a = _settled_time(fn)
        b = _settled_time(baseline)
        t_fn.append(a)
        t_base.append(b)
        ratios.append(a / b)
    return {"seconds": statistics.median(t_fn), "baseline_seconds": statistics.median(t_base),
            "ratio": statistics.median(ratios)}


def median_time(fn, repeats: int) -> float:
    fn()
    return statistics.median(_settled_time(fn) for _ in range(repeats))


# --- the benchmarks ----------------------------------------------------------------------
def _layer(points, n_in, n_out, dtype, signed=False, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((points, n_in))
    if not signed:
        A = np.maximum(A, 0)  # the input of a hidden layer after ReLU
    W = rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
    return A.astype(dtype), W.astype(dtype)


def bench_layer(shapes, repeats) -> list:
    """Target 1: one dense layer's sensitivity vs a same-shape BLAS GEMM, with a breakdown."""
    sens = importlib.import_module("sparsify.sensitivity")
    rows = []
    for dtype in (np.float64, np.float32):
        for points, n_in, n_out, signed in shapes:
            A, W = _layer(points, n_in, n_out, dtype, signed)
            res = paired(lambda: sens._sensitivity_layer(A, W), lambda: A @ W.T, repeats)
            # breakdown of one block: transpose + the Z GEMM (as sensitivity runs them) and the max-times kernel
            block = np.ascontiguousarray(np.maximum(A[:sens.DEFAULT_CHUNK_SIZE], 0))
            acc = sens._LayerMaxima(W, sens.DEFAULT_TILES)
            AT, r = acc.buffers(block.shape[0])

            def z_step():
                with single_threaded_blas():
                    sens._transpose_part(block, AT, 0)
                    sens._z_reciprocals(acc.stacked, AT, r, sens.z_parts(r.shape[0]))

            t_z = median_time(z_step, repeats)
            tiles = acc.tiles
            t_k = median_time(lambda: sens._max_times(AT, r, acc.stacked, acc.R, tiles["tile_i"], tiles["tile_j"],
                                                       tiles["tile_x"]), repeats)
            t_g = median_time(lambda: block @ W.T, repeats)
            rows.append({
                "dtype": np.dtype(dtype).name, "points": points, "n_in": n_in, "n_out": n_out,
                "signed_inputs": signed, **res,
                "block_points": int(block.shape[0]), "block_gemm_seconds": t_g,
                "block_Z_and_reciprocals_seconds": t_z, "block_kernel_seconds": t_k,
                "Z_over_gemm": t_z / t_g, "kernel_over_gemm": t_k / t_g,
            })
    return rows


#: OpenBLAS's idle workers spin for about 2**28 cycles (~0.1 s) after every call
#: (its default thread timeout); this setting shortens the spin to 2**4 cycles.
#: sparsify runs its products on Numba's threads with BLAS held to one thread
#: (sparsify._blas), so the rows measured with it are a comparison: they should
#: match the default ones within noise.
BLAS_SPIN_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def short_blas_spin(name: str, *args):
    """Run ``name(*args)`` of this module in a subprocess with :data:`BLAS_SPIN_ENV` set."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import run; "
            "print(json.dumps(getattr(run, sys.argv[2])(*json.loads(sys.argv[3]))))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), name, json.dumps(args)],
                         capture_output=True, text=True, timeout=3600, env=dict(os.environ, **BLAS_SPIN_ENV))
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_reference(shape, repeats) -> list:
    """Kernel vs the readable NumPy reference on a shape the reference can do in seconds."""
    from sparsify import reference

    sens = importlib.import_module("sparsify.sensitivity")
    rows = []
    for dtype in (np.float64, np.float32):
        A, W = _layer(*shape, dtype)
        t_ref = _time(lambda: reference.sensitivity_layer(A, W))  # once: it is slow
        t_k = median_time(lambda: sens._sensitivity_layer(A, W), repeats)
        t_g = median_time(lambda: A @ W.T, repeats)
        rows.append({"dtype": np.dtype(dtype).name, "points": shape[0], "n_in": shape[1], "n_out": shape[2],
                     "reference_seconds": t_ref, "kernel_seconds": t_k, "gemm_seconds": t_g,
                     "speedup": t_ref / t_k})
    return rows


def bench_scaling(repeats, quick) -> list:
    """Target 3: 4x points and 4x weights should cost 3.5-4.5x."""
    sens = importlib.import_module("sparsify.sensitivity")
    rows = []
    dtypes = (np.float64,) if quick else (np.float64, np.float32)
    for dtype in dtypes:
        for kind, small, large in (("points", (512, 1024, 1024), (2048, 1024, 1024)),
                                   ("weights", (512, 512, 512), (512, 1024, 1024))):
            A1, W1 = _layer(*small, dtype)
            A4, W4 = _layer(*large, dtype)
            # timed alternately, ratio = median of per-pair ratios (robust to drifting load)
            res = paired(lambda: sens._sensitivity_layer(A4, W4), lambda: sens._sensitivity_layer(A1, W1), repeats)
            times = [res["baseline_seconds"], res["seconds"]]
            rows.append({"dtype": np.dtype(dtype).name, "grow": kind, "small": list(small), "large": list(large),
                         "small_seconds": times[0], "large_seconds": times[1], "ratio": res["ratio"]})
    return rows


_STREAM_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time, tracemalloc
    import numpy as np
    import sparsify as sp
    n_points, batch = int(sys.argv[1]), int(sys.argv[2])
    net = sp.random_mlp([1024, 1024, 10], rng=0)
    sp.sensitivity(net, np.ones((2, 1024)))  # load the kernels before measuring
    def batches():
        for k in range(0, n_points, batch):
            rng = np.random.default_rng(k)
            yield rng.random((min(batch, n_points - k), 1024))
    tracemalloc.start()
    t0 = time.perf_counter()
    s = sp.sensitivity(net, batches())
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"points": n_points, "seconds": seconds, "tracemalloc_peak_bytes": peak,
                      "peak_rss_bytes": rss_kib * 1024}))
    """
)


def bench_streaming(quick) -> dict:
    """Target 2: memory flat as |S| grows (a generator of 1,000-point batches, 1024-1024-10 net)."""
    sizes = (2_000, 20_000) if quick else (2_000, 200_000)
    runs = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-c", _STREAM_SCRIPT, str(n), "1000"], capture_output=True,
                             text=True, timeout=3600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    small, large = runs
    return {"runs": runs,
            "rss_ratio": large["peak_rss_bytes"] / small["peak_rss_bytes"],
            "tracemalloc_ratio": large["tracemalloc_peak_bytes"] / small["tracemalloc_peak_bytes"],
            "time_per_point_ratio": (large["seconds"] / large["points"]) / (small["seconds"] / small["points"])}


_FIRST_CALL_SCRIPT = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import numpy as np
    import sparsify as sp
    t1 = time.perf_counter()
    net = sp.random_mlp([20, 30, 10], rng=0)
    net32 = net.astype(np.float32)
    X = np.random.default_rng(0).standard_normal((40, 20))
    t2 = time.perf_counter()
    sp.sensitivity(net, X); sp.sensitivity(net32, X)
    t3 = time.perf_counter()
    sp.sensitivity(net, X); sp.sensitivity(net32, X)
    t4 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "first_call": t3 - t2, "second_call": t4 - t3}))
    """
)


def _run_first_call(env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL_SCRIPT], capture_output=True, text=True,
                         timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_startup(quick) -> dict:
    """Target 4: a second process pays < 1 s compilation; ``sparsify --help`` < 1.5 s."""
    _run_first_call()  # make sure the on-disk cache is filled
    warm = [_run_first_call() for _ in range(3)]
    result = {"warm_cache": warm,
              "first_call_overhead": statistics.median(r["first_call"] - r["second_call"] for r in warm),
              "import_seconds": statistics.median(r["import"] for r in warm)}
    if not quick:  # compilation from scratch, into an empty cache directory
        with tempfile.TemporaryDirectory() as tmp:
            cold = _run_first_call(dict(os.environ, NUMBA_CACHE_DIR=tmp))
        result["cold_cache"] = cold
    exe = shutil.which("sparsify", path=str(Path(sys.executable).parent))
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "sparsify", "--help"]
    times = []
    for _ in range(3 if quick else 5):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
    result["help_command"] = " ".join(Path(c).name if k == 0 else c for k, c in enumerate(cmd))
    result["help_seconds"] = statistics.median(times)
    return result


def bench_prune(repeats) -> dict:
    """Target 5: the whole prune call vs its own sensitivity step (784-300-100-10, |S| = 152)."""
    import sparsify as sp

    try:
        from sparsify import prune
    except ImportError as exc:
        return {"skipped": f"sparsify.prune not importable: {exc}"}
    net = sp.random_mlp([784, 300, 100, 10], rng=0)
    X = np.random.default_rng(1).random((152, 784))  # pixel-like inputs in [0, 1)
    res = paired(lambda: prune(net, X, keep=0.1, method="hybrid", rng=0), lambda: sp.sensitivity(net, X),
                 repeats)
    return res


def _hot_loop(asm: str) -> list:
    """The instructions of the loop over points: the basic block with the most vector multiplies."""
    blocks, current = [], []
    for line in asm.splitlines():
        if re.match(r"^\.LBB", line):
            blocks.append(current)
            current = []
        current.append(line)
    blocks.append(current)
    block = max(blocks, key=lambda b: sum(bool(re.match(r"\s*vmulp[sd]\s", ln)) for ln in b))
    loop = []
    for ln in block[1:]:
        ln = ln.strip()
        if ln and not ln.startswith((".", "#")):
            loop.append(ln)
        if ln.startswith("j"):  # the loop's backward branch ends it
            break
    return loop


def inspect_kernel() -> dict:
    """Count the instructions of the loop over points in a fresh (uncached) compile of
    the pass of each vector width (ymm: 32 bytes, zmm: 64 bytes)."""
    from sparsify import _maxtimes
    from sparsify._config import njit

    out = {}
    for vb in (32, 64):
        kernel = njit(parallel=True, cache=False)(_maxtimes._PASSES[vb].py_func)
        n, m = _maxtimes.TILE_I, _maxtimes.TILE_J
        for dtype in (np.float64, np.float32):
            p = _maxtimes.POINT_MULTIPLE
            kernel(np.zeros((m, p), dtype), np.zeros((2 * n, p), dtype), np.zeros((2 * n, m), dtype),
                   np.zeros((n, m), dtype), n, m, p, p)
        for sig in kernel.signatures:
            loop = _hot_loop(kernel.inspect_asm(sig))
            reg = "zmm" if vb == 64 else "ymm"
            out[f"{reg} {sig[0].dtype}"] = {
                "register_tile": list(_maxtimes.REGISTER_TILES[vb]),
                "instructions": len(loop),
                "mul": sum(bool(re.match(rf"vmulp[sd]\s.*%{reg}", ln)) for ln in loop),
                "mul_from_memory": sum(bool(re.match(rf"vmulp[sd]\s+-?\d*\(.*%{reg}", ln)) for ln in loop),
                "max": sum(bool(re.match(rf"vmaxp[sd]\s.*%{reg}", ln)) for ln in loop),
                "vector_loads": sum(bool(re.match(rf"vmovup[sd]\s+-?\d*\(.*%{reg}\d+$", ln)) for ln in loop),
                "address_reloads": sum(bool(re.match(r"movq\s+-?\d*\(%rsp\)", ln)) for ln in loop),
                "blends": sum(bool(re.match(r"vblendv", ln)) for ln in loop),
                "scalar_fp": sum(bool(re.match(r"v\w+s[sd]\s", ln)) for ln in loop),
            }
    return out


def bench_widths(shapes, repeats) -> list:
    """The whole step with ymm (32-byte) and with zmm (64-byte) vectors, side by side in one
    process (same bits; the ratio zmm / ymm is what the host's choice gains)."""
    from sparsify import _config

    sens = importlib.import_module("sparsify.sensitivity")
    rows = []
    chosen = _config.vector_bytes()
    try:
        for dtype in (np.float64, np.float32):
            for points, n_in, n_out, signed in shapes:
                A, W = _layer(points, n_in, n_out, dtype, signed)

                def run(vb):
                    _config._vector_bytes_cache["value"] = vb  # this process's width, set for the comparison
                    return sens._sensitivity_layer(A, W)

                assert run(32).tobytes() == run(64).tobytes()
                res = paired(lambda: run(64), lambda: run(32), repeats)
                rows.append({"dtype": np.dtype(dtype).name, "points": points, "n_in": n_in, "n_out": n_out,
                             "signed_inputs": signed, "zmm_seconds": res["seconds"],
                             "ymm_seconds": res["baseline_seconds"], "zmm_over_ymm": res["ratio"]})
    finally:
        _config._vector_bytes_cache["value"] = chosen
    return rows


def bench_small(repeats) -> list:
    """Target 4: a tiny layer against its NumPy reference (serial path below the size threshold)."""
    from sparsify import reference

    sens = importlib.import_module("sparsify.sensitivity")
    rows = []
    for shape in ((10, 20, 30), (64, 100, 50)):
        for signed in (False, True):
            A, W = _layer(*shape, np.float64, signed)
            res = paired(lambda: sens._sensitivity_layer(A, W), lambda: reference.sensitivity_layer(A, W), repeats)
            rows.append({"points": shape[0], "n_in": shape[1], "n_out": shape[2], "signed_inputs": signed,
                         "seconds": res["seconds"], "reference_seconds": res["baseline_seconds"],
                         "ratio": res["ratio"]})
    return rows


# --- report ----------------------------------------------------------------------------------
def _ok(flag: bool) -> str:
    return "ok" if flag else "MISS"


def _shape(row) -> str:
    """``points x in x out`` of a layer row."""
    return f"{row['points']}x{row['n_in']}x{row['n_out']}"


def _inputs(row) -> str:
    return "signed" if row["signed_inputs"] else ">= 0"


def _layer_line(row, rows=()) -> str:
    shape = _shape(row)
    target = f"<=6 {_ok(row['ratio'] <= 6):4s}"
    if row["signed_inputs"]:  # target 2: <= 2.2x the nonnegative case of the same shape and dtype
        same = [r for r in rows if not r["signed_inputs"] and r["dtype"] == row["dtype"]
                and (r["points"], r["n_in"], r["n_out"]) == (row["points"], row["n_in"], row["n_out"])]
        if same:
            x = row["seconds"] / same[0]["seconds"]
            target = f"{x:.2f}x>=0 {_ok(x <= 2.2)}"
    stretch = "" if row["signed_inputs"] else (" stretch<=4 " + _ok(row["ratio"] <= 4))
    return (
        f"   {row['dtype']:8s} {shape:>18s} {_inputs(row):>7s} "
        f"{row['seconds'] * 1e3:9.1f} {row['baseline_seconds'] * 1e3:8.1f} {row['ratio']:6.2f}  "
        f"{target:13s}| {row['Z_over_gemm']:5.2f} {row['kernel_over_gemm']:6.2f}{stretch}"
    )


def report(results: dict) -> str:
    env = results["environment"]
    lines = [
        "sparsify benchmark -- sensitivity step",
        f"date {env['date']}  commit {env['commit']}  python {env['python']}  numpy {env['numpy']}  "
        f"numba {env['numba']}",
        f"cpu {env['cpu']}  cores {env['cores']}  numba threads {env['numba_threads']} "
        f"({env['numba_threading_layer']})",
        f"blas {env['blas']}",
        "cpu flags: AVX2 {}  AVX-512 {} (llvm: cpu {}, AVX-512 F/BW/DQ/VL {})".format(
            env["cpu_flags"]["avx2"], " ".join(env["cpu_flags"]["avx512"]) or "none", env["cpu_flags"]["llvm_cpu"],
            env["cpu_flags"]["llvm_avx512"]),
        "blas kernels in use (threadpoolctl): " + "; ".join(
            f"{b.get('file')} {b.get('version')} kernel {b.get('kernel')} threads {b.get('threads')}"
            for b in env["blas_kernels"]),
        "choices: max-times vectors {vector_bits} bits (override {ov}), register tile {rt}, serial below {sw}, "
        "cache tiles {ct}, Z row blocks <= {zr}; OPENBLAS_* env {oe}".format(
            vector_bits=env["choices"]["vector_bits"], ov=env["choices"]["vector_bits_env"],
            rt="x".join(map(str, env["choices"]["register_tile"])), sw="{:,} (float64) / {:,} (float32) multiply-adds ({})".format(
                env["choices"]["serial_work"]["float64"], env["choices"]["serial_work"]["float32"],
                env["choices"]["serial_work"]["source"]),
            ct=env["choices"]["cache_tiles"], zr=env["choices"]["z_rows_per_part"],
            oe=env["choices"]["openblas_env"] or "none"),
        f"load average at start {env['loadavg_start'][0]:.2f}, at end {env['loadavg_end'][0]:.2f} "
        "(other processes share these cores)",
    ]
    if "layer" in results or "layer_short_blas_spin" in results:
        lines += [
            "",
            "1. one dense layer: sensitivity (sign split, Z+- GEMM, max-times, all included) / BLAS A @ W.T",
            f"   {'dtype':8s} {'points x in x out':>18s} {'inputs':>7s} {'sens ms':>9s} {'gemm ms':>8s} "
            f"{'ratio':>6s}  target       | per block: Z/gemm kernel/gemm",
        ]
    for key, title in (("layer", "default environment"),
                       ("layer_short_blas_spin", "with " + " ".join(f"{k}={v}" for k, v in BLAS_SPIN_ENV.items())
                        + " (OpenBLAS workers stop spinning after each GEMM)")):
        if key in results:
            lines.append(f"   {title}:")
            for row in results[key]:
                lines.append(_layer_line(row, results[key]))
    if "reference" in results:
        lines += ["", "   kernel vs the NumPy reference (reference timed once):"]
    for row in results.get("reference", []):
        lines.append(
            f"   {row['dtype']:8s} {_shape(row)}: reference "
            f"{row['reference_seconds']:.2f} s, kernel {row['kernel_seconds'] * 1e3:.1f} ms, "
            f"gemm {row['gemm_seconds'] * 1e3:.2f} ms -> {row['speedup']:.0f}x faster than the reference"
        )
    st = results.get("streaming")
    small, large = st["runs"] if st else ({"points": 0}, {"points": 0})
    lines += [] if not st else [
        "",
        f"2. streaming memory, 1024-1024-10 net, generator of 1000-point batches, |S| = {large['points']:,} "
        f"vs {small['points']:,}",
        f"   peak RSS {large['peak_rss_bytes'] / 2**20:.0f} MiB vs {small['peak_rss_bytes'] / 2**20:.0f} MiB: "
        f"ratio {st['rss_ratio']:.3f} (target < 1.2 {_ok(st['rss_ratio'] < 1.2)})",
        f"   tracemalloc peak {large['tracemalloc_peak_bytes'] / 2**20:.1f} MiB vs "
        f"{small['tracemalloc_peak_bytes'] / 2**20:.1f} MiB: ratio {st['tracemalloc_ratio']:.3f}",
        f"   time per point: ratio {st['time_per_point_ratio']:.2f} "
        f"({large['seconds']:.1f} s vs {small['seconds']:.2f} s)",
    ]
    if "scaling" in results:
        lines += ["", "3. linear cost (target 3.5-4.5x for 4x)"]
    for key, title in (("scaling", "default environment"),
                       ("scaling_short_blas_spin", " ".join(f"{k}={v}" for k, v in BLAS_SPIN_ENV.items()))):
        if key in results:
            lines.append(f"   {title}:")
        for row in results.get(key, []):
            ok = 3.5 <= row["ratio"] <= 4.5
            lines.append(
                f"   {row['dtype']:8s} 4x {row['grow']:8s} {'x'.join(map(str, row['small']))} -> "
                f"{'x'.join(map(str, row['large']))}: {row['small_seconds'] * 1e3:.1f} -> "
                f"{row['large_seconds'] * 1e3:.1f} ms, ratio {row['ratio']:.2f} {_ok(ok)}"
            )
    su = results.get("startup", {})
    lines += [] if not su else [
        "",
        "4. JIT and start-up",
        f"   second process, first call (float64 + float32, 2-layer net) minus a warm call: "
        f"{su['first_call_overhead']:.3f} s (target < 1 s {_ok(su['first_call_overhead'] < 1)}); "
        f"import sparsify {su['import_seconds']:.2f} s",
    ]
    if "cold_cache" in su:
        lines.append(f"   for comparison, compiling into an empty cache: first call {su['cold_cache']['first_call']:.1f} s")
    if su:
        lines.append(f"   `{su['help_command']}`: {su['help_seconds']:.2f} s (target < 1.5 s {_ok(su['help_seconds'] < 1.5)})")
    pr = results.get("prune")
    if pr:
        lines += ["", "5. prune(784-300-100-10, |S| = 152, keep=0.1, hybrid) / its sensitivity step"]
    if pr and "skipped" in pr:
        lines.append(f"   skipped: {pr['skipped']}")
    elif pr:
        lines.append(
            f"   prune {pr['seconds'] * 1e3:.1f} ms, sensitivity {pr['baseline_seconds'] * 1e3:.1f} ms: "
            f"ratio {pr['ratio']:.2f} (target <= 3 {_ok(pr['ratio'] <= 3)})"
        )
    if "widths" in results:
        lines += ["", "6. vector widths side by side (whole step, same bits): zmm (64 bytes) / ymm (32 bytes)"]
    for row in results.get("widths", []):
        lines.append(
            f"   {row['dtype']:8s} {_shape(row)} {_inputs(row):>7s}: ymm {row['ymm_seconds'] * 1e3:.1f} ms, "
            f"zmm {row['zmm_seconds'] * 1e3:.1f} ms, zmm/ymm {row['zmm_over_ymm']:.2f}")
    if "small" in results:
        lines += ["", "7. small layers: fast path / NumPy reference (target: a few times at most)"]
    for row in results.get("small", []):
        lines.append(
            f"   float64 {_shape(row)} {_inputs(row):>7s}: "
            f"{row['seconds'] * 1e6:.0f} us vs reference {row['reference_seconds'] * 1e6:.0f} us, "
            f"ratio {row['ratio']:.2f} {_ok(row['ratio'] <= 3)}")
    if "asm" in results:
        lines += ["", "assembly of the loop over points of the max-times pass (fresh compile, per vector width):"]
    for name, c in results.get("asm", {}).items():
        lines.append(
            f"   {name}: tile {'x'.join(map(str, c['register_tile']))}: {c['instructions']} instructions, "
            f"{c['mul']} mul ({c['mul_from_memory']} reading r from memory) + {c['max']} max, "
            f"{c['vector_loads']} input loads, {c['address_reloads']} row-address reloads, {c['blends']} blends, "
            f"{c['scalar_fp']} scalar FP ops")
    return "\n".join(lines)


#: the sections of the benchmark, in the order they run (``--only`` picks some)
SECTIONS = ("layer", "spin", "reference", "scaling", "streaming", "startup", "prune", "widths", "small", "reconstruct",
            "asm")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, |S| = 20,000 for the memory test")
    parser.add_argument("--json", metavar="OUT", help="also write all numbers to this JSON file")
    parser.add_argument("--only", metavar="LIST", help="comma-separated sections to run (default all): "
                        + ",".join(SECTIONS))
    parser.add_argument("--distributed", action="store_true",
                        help="run the Dask benchmark instead (benchmarks/distributed.py; needs the 'dask' extra)")
    args = parser.parse_args(argv)
    if args.distributed:
        from benchmarks import distributed

        return distributed.main((["--quick"] if args.quick else []) + (["--json", args.json] if args.json else []))
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    repeats = 3 if args.quick else 7

    results = {"environment": environment(), "quick": args.quick}
    shapes = [(1024, 1024, 1024, False), (512, 784, 300, False), (512, 784, 300, True)]
    if "layer" in only:
        results["layer"] = bench_layer(shapes, repeats)
        results["environment"]["numba_threading_layer"] = _threading_layer()
    if "spin" in only:
        results["layer_short_blas_spin"] = short_blas_spin("bench_layer", shapes, repeats)
    if "reference" in only:
        results["reference"] = bench_reference((64, 784, 300), repeats)
    if "scaling" in only:
        results["scaling"] = bench_scaling(repeats, args.quick)
    if "spin" in only and "scaling" in only:
        results["scaling_short_blas_spin"] = short_blas_spin("bench_scaling", repeats, args.quick)
    if "streaming" in only:
        results["streaming"] = bench_streaming(args.quick)
    if "startup" in only:
        results["startup"] = bench_startup(args.quick)
    if "prune" in only:
        results["prune"] = bench_prune(repeats)
    if "widths" in only:
        results["widths"] = bench_widths(shapes, repeats)
    if "small" in only:
        results["small"] = bench_small(repeats)
    if "reconstruct" in only:
        from benchmarks.reconstruct import bench_reconstruct  # least-squares refit
        results["reconstruct"] = bench_reconstruct(3)
    if "asm" in only:
        results["asm"] = inspect_kernel()
    results["environment"]["loadavg_end"] = list(os.getloadavg())
    text = report(results)
    if "reconstruct" in results:
        from benchmarks.reconstruct import format_reconstruct
        text += "\n" + format_reconstruct(results["reconstruct"])
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
