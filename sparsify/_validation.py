"""Input validation: done once at the public boundary, with messages that name
the parameter, the rule, the value received and how to fix it."""
from __future__ import annotations

import numbers

import numpy as np

from ._config import SUPPORTED_DTYPES


def check_rng(rng) -> np.random.Generator:
    """Normalise ``rng`` (None, an int seed or a Generator) to a Generator.

    Booleans are refused: ``rng=True`` reads as "random, please" but would be the seed 1.
    """
    if isinstance(rng, (bool, np.bool_)):
        raise TypeError(
            f"rng: booleans are not seeds, got {rng!r}. Pass None for fresh randomness, an int seed "
            "(e.g. rng=0) or a numpy.random.Generator."
        )
    if rng is None or isinstance(rng, (numbers.Integral, np.integer)):
        if rng is not None and int(rng) < 0:
            raise ValueError(f"rng: a seed must be a non-negative integer, got {rng}.")
        return np.random.default_rng(None if rng is None else int(rng))
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(
        "rng: expected None, a non-negative int seed or a numpy.random.Generator, "
        f"got {type(rng).__name__}. Pass e.g. rng=0 or rng=np.random.default_rng(0)."
    )


def as_float_array(x, name: str, *, ndim: int | None = None, dtype=None, copy: bool = False) -> np.ndarray:
    """Return ``x`` as a finite float32/float64 array of the given rank.

    Integer and boolean input is cast to float64; complex, object and string
    input is refused with a TypeError. NaN or inf raise a ValueError.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: could not convert to an array ({exc}).") from None
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype.kind == "f" and arr.dtype not in SUPPORTED_DTYPES:
        arr = arr.astype(np.float64)  # float16 / longdouble
    elif arr.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a real floating-point array (float32 or float64), got dtype "
            f"{arr.dtype}. Convert it with np.asarray(..., dtype=np.float64)."
        )
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name}: dtype {arr.dtype} does not match the network's dtype {np.dtype(dtype)}; "
            f"cast it with .astype(np.{np.dtype(dtype).name})."
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}.")
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name}: contains {bad} NaN or infinite value(s); clean the data (e.g. np.nan_to_num) "
            "before pruning."
        )
    if copy:
        arr = np.array(arr, copy=True)
    return arr


def check_keep_budget(keep, budget, total: int) -> int:
    """Turn exactly one of ``keep`` (fraction in (0, 1]) or ``budget`` (count)
    into an integer budget of kept weights, 1 <= B <= total."""
    if (keep is None) == (budget is None):
        raise ValueError(
            "prune: give exactly one of keep= (fraction of prunable weights to keep, in (0, 1]) "
            f"or budget= (number of weights to keep); got keep={keep!r}, budget={budget!r}."
        )
    if keep is not None:
        keep = check_scalar(keep, "keep (the fraction of prunable weights kept; for 90% pruning pass keep=0.1)",
                            low=0.0, low_open=True, high=1.0)
        return max(1, min(total, int(round(keep * total))))
    return check_scalar(budget, f"budget (a count of weights, at most the {total} prunable ones)", kind="int",
                        low=1, high=total)


def check_positive(value, name: str, *, upper: float | None = None, inclusive_upper: bool = False) -> float:
    """A finite positive real (optionally below ``upper``)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__}.")
    value = float(value)
    ok = np.isfinite(value) and value > 0
    if ok and upper is not None:
        ok = value <= upper if inclusive_upper else value < upper
    if not ok:
        rule = "> 0" if upper is None else f"in (0, {upper}{']' if inclusive_upper else ')'}"
        raise ValueError(f"{name}: must be {rule}, got {value}.")
    return value


def check_choice(value, name: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: must be one of {sorted(choices)}, got {value!r}.")
    return value


def check_scalar(value, name: str, *, kind: str = "real", low=None, high=None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False):
    """Validate one scalar argument and return it as a Python ``float``/``int``.

    The one rule behind every scalar check of the package (messages share one
    format: the parameter, the rule, the value received, and how to fix it).

    Parameters
    ----------
    value
        What the caller passed.
    name
        The parameter's name as the user wrote it (``"keep"``, ``"--eps"``).
    kind
        ``"real"`` (any finite real, returned as float) or ``"int"`` (an
        integral value, returned as int). Booleans are refused for both.
    low, high
        Bounds; ``None`` for none. ``low_open``/``high_open`` make an end open.
    allow_none
        Return ``None`` unchanged instead of refusing it.

    Raises
    ------
    TypeError
        ``value`` is not a number of the requested kind (or is a bool).
    ValueError
        ``value`` is NaN/inf or lies outside the interval.
    """
    if value is None and allow_none:
        return None
    if kind not in ("real", "int"):
        raise ValueError(f"check_scalar: kind must be 'real' or 'int', got {kind!r}.")
    want = "an integer" if kind == "int" else "a real number"
    ok_type = (numbers.Integral, np.integer) if kind == "int" else (numbers.Real, np.floating, np.integer)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, ok_type):
        raise TypeError(f"{name}: expected {want}, got {type(value).__name__} ({value!r}).")
    value = int(value) if kind == "int" else float(value)
    if kind == "real" and not np.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value}.")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        raise ValueError(f"{name}: must be in {interval}, got {value!r}.")
    return value
