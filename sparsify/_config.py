"""The one place where Numba options and numerical tolerances are set.

Every kernel in the package is compiled through :func:`njit` below; nothing
else hard-codes Numba flags. Tunables are passed to kernels as arguments,
never read from module globals (Numba freezes globals at compile time).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import numba
import numpy as np

#: fastmath flags that allow vectorising reductions and contractions but keep
#: IEEE NaN/inf semantics ("nnan" and "ninf" are deliberately absent).
FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn"})

#: floating dtypes the package computes in; anything else is cast or refused.
SUPPORTED_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))

#: relative tolerances used when comparing a kernel with its NumPy reference.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
#: absolute tolerances for the same comparisons (values live in [0, 1]).
ATOL = {np.dtype(np.float64): 1e-14, np.dtype(np.float32): 1e-6}


def njit(*args, parallel: bool = False, fastmath: bool = False, **kwargs):
    """Compile a kernel with the project's Numba options.

    ``cache=True`` stores compiled code on disk next to the module so a second
    process pays no compilation cost. ``fastmath=True`` selects
    :data:`FASTMATH_FLAGS`, never Numba's full fast-math set.
    """
    options = dict(cache=True, nogil=True, parallel=parallel, error_model="numpy")
    if fastmath:
        options["fastmath"] = set(FASTMATH_FLAGS)
    options.update(kwargs)
    if args and callable(args[0]):
        return numba.njit(**options)(args[0])
    return numba.njit(*args, **options)


prange = numba.prange


# --- machine-dependent choices of the sensitivity step (docs/performance.md) -------------
#: environment variable that overrides the vector width of the max-times kernel:
#: "256" (AVX2 ``ymm``) or "512" (AVX-512 ``zmm``); unset or "auto": the host's
VECTOR_BITS_ENV = "SPARSIFY_VECTOR_BITS"

_vector_bytes_cache: dict = {}


def host_has_avx512() -> bool:
    """True when LLVM (llvmlite) reports AVX-512 F, BW, DQ and VL on this CPU."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # llvmlite cannot tell on this platform
        return False
    return all(features.get(f, False) for f in ("avx512f", "avx512bw", "avx512dq", "avx512vl"))


def _numba_targets_the_host() -> bool:
    """False when NUMBA_CPU_NAME asks Numba to compile for another CPU (e.g. "generic",
    for a cache shared between machines) without AVX-512 in NUMBA_CPU_FEATURES: 64-byte
    vectors would then be split into narrower ones, so 32 is the better guess."""
    name = (numba.config.CPU_NAME or "host").lower()
    if name == "host":
        return True
    return "+avx512f" in (numba.config.CPU_FEATURES or "")


def vector_bytes() -> int:
    """The vector width (bytes) the max-times kernel runs with in this process: 64
    (AVX-512 ``zmm``, 8 float64 or 16 float32 points per vector, a register tile for
    32 registers) when the host has AVX-512 (and Numba compiles for the host), else 32 (AVX2 ``ymm``, a tile for 16);
    ``SPARSIFY_VECTOR_BITS=256`` or ``512`` overrides it. Read once per process, when
    the kernel first runs. Every width gives the same bits (each term is one IEEE
    multiply, and a maximum is exact)."""
    if "value" not in _vector_bytes_cache:
        raw = os.environ.get(VECTOR_BITS_ENV, "auto").strip().lower()
        if raw in ("", "auto"):
            value = 64 if host_has_avx512() and _numba_targets_the_host() else 32
        elif raw in ("256", "512"):
            value = int(raw) // 8
        else:
            raise ValueError(
                f"{VECTOR_BITS_ENV}: expected 256, 512 or auto, got {raw!r}; unset it to use the host's "
                "vector width."
            )
        _vector_bytes_cache["value"] = value
    return _vector_bytes_cache["value"]


#: a step of the sensitivity computation whose work (multiply-adds, or weights times
#: POINT_MULTIPLE for a pass over the weights) is below a threshold runs on the calling
#: thread only: starting Numba's thread pool, and waiting at each parallel region
#: for a worker the OS has not scheduled yet, costs more than the work. The threshold
#: is calibrated once per machine (sparsify._calibrate, cached); the environment
#: variable SPARSIFY_SERIAL_WORK overrides it (an integer, 0: always parallel; "auto"
#: or unset: calibrated).
SERIAL_WORK_ENV = "SPARSIFY_SERIAL_WORK"
#: the threshold where nothing is measured: Numba's JIT disabled (the kernels are their
#: Python twins, whose speed says nothing) or a single thread (nothing to choose)
SERIAL_WORK = 1_000_000

_serial_work_cache: dict = {}
_calibrating = False  # set while sparsify._calibrate measures: the probes set their threads themselves


def serial_work(dtype=np.float64) -> int:
    """The serial threshold for blocks of ``dtype``: ``SPARSIFY_SERIAL_WORK`` when set,
    else this machine's calibration (measured at first use, then read from its cache)."""
    if _calibrating:
        return 0
    raw = os.environ.get(SERIAL_WORK_ENV, "").strip().lower()
    if raw not in ("", "auto"):
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"{SERIAL_WORK_ENV}: expected a nonnegative integer (multiply-adds) or auto, got "
                             f"{raw!r}; unset it for this machine's calibrated threshold.")
        return value
    if numba.config.DISABLE_JIT or numba.config.NUMBA_NUM_THREADS <= 1:
        return SERIAL_WORK
    if "threshold" not in _serial_work_cache:
        from ._calibrate import calibrate

        _serial_work_cache["threshold"] = calibrate()["threshold"]
    return _serial_work_cache["threshold"].get(np.dtype(dtype).name, SERIAL_WORK)


@contextmanager
def serial_below(work: int, dtype=np.float64):
    """Run the parallel kernels of the block on one thread when ``work`` is below
    :func:`serial_work` of ``dtype`` (``numba.set_num_threads(1)``, restored on exit). The
    results are the same bits: no kernel's result depends on the thread count."""
    if work >= serial_work(dtype):
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)
