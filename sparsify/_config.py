"""The one place where Numba options and numerical tolerances are set.

Every kernel in the package is compiled through :func:`njit` below; nothing
else hard-codes Numba flags. Tunables are passed to kernels as arguments,
never read from module globals (Numba freezes globals at compile time).
"""
from __future__ import annotations

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
