"""Hypothesis strategies for testing SiPP implementations.

Use them to property-test sparsify itself or a port of the method (PyTorch,
JAX, ONNX, ...): draw a network and a batch S, run both implementations, and
compare, or check an invariant such as ``sum_j g_ij(x) = 1`` on every live side.

>>> from hypothesis import given
>>> from sparsify.testing import strategies as sst
>>> @given(sst.networks_with_inputs(n_layers=(1, 3), signed=True))
... def test_something(net_and_X):
...     net, X = net_and_X
...     ...

All arguments are validated when the strategy is built, so a typo fails at
collection time with a message naming the argument, not somewhere inside a
failing example. Sizes are given as an int (fixed) or an inclusive
``(min, max)`` pair. Values are "well scaled" by default: magnitudes are
either exactly 0 or in ``[min_magnitude, max_magnitude]``, so that products
never underflow into subnormals; exact zeros are drawn on purpose, since they
make dead sides and zero pre-activations, the edge cases a port gets wrong.

Every drawn network (and batch) is written into the falsifying example's
report with :func:`hypothesis.note` as Python code that rebuilds it exactly
(:func:`network_code`), so a failure can be replayed outside Hypothesis.

This module needs Hypothesis (the ``test`` extra).
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Sequence

import numpy as np

try:
    from hypothesis import note
    from hypothesis import strategies as st
    from hypothesis.control import currently_in_test_context
    from hypothesis.extra import numpy as hnp
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError(
        "sparsify.testing.strategies needs Hypothesis; install it with `pip install sparsify[test]` "
        "or `pip install hypothesis`.",
        name=exc.name,
    ) from None

from ..activations import ACTIVATIONS
from ..network import Dense, Network

__all__ = [
    "budgets",
    "conv_inputs",
    "conv_networks",
    "conv_networks_with_inputs",
    "dtypes",
    "eps_delta",
    "inputs",
    "keeps",
    "networks",
    "network_code",
    "networks_with_inputs",
    "side_sensitivities",
    "weight_matrices",
]

_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}


def array_code(a: np.ndarray) -> str:
    """``np.array([...], dtype=np.float64)``: Python code giving back ``a`` bit for bit."""
    body = np.array2string(np.asarray(a), separator=", ", threshold=sys.maxsize, max_line_width=sys.maxsize,
                           floatmode="unique")
    return f"np.array({body}, dtype=np.{np.asarray(a).dtype.name})"


def network_code(net: Network) -> str:
    """Python code that rebuilds ``net`` exactly (weights, biases, activations)."""
    layers = ", ".join(
        f"Dense({array_code(layer.weight)}, {'None' if layer.bias is None else array_code(layer.bias)}, "
        f"{layer.activation!r})"
        for layer in net.layers
    )
    return f"Network([{layers}])"


def _note(label: str, code: str) -> None:
    if currently_in_test_context():
        note(f"{label} = {code}")


# --- argument validation ------------------------------------------------------
def _size_range(value, name: str, minimum: int = 1) -> tuple[int, int]:
    """An int or an inclusive (min, max) pair of ints, all >= minimum."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        lo = hi = int(value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        lo, hi = int(value[0]), int(value[1])
    else:
        raise TypeError(
            f"{name}: expected an int or an inclusive (min, max) pair of ints, got {value!r}; "
            f"e.g. {name}=3 or {name}=(1, 8)."
        )
    if lo < minimum or hi < lo:
        raise ValueError(
            f"{name}: need {minimum} <= min <= max, got ({lo}, {hi}); e.g. {name}=({minimum}, {max(minimum, 8)})."
        )
    return lo, hi


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a positive number, got {type(value).__name__}.")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}: must be a finite number > 0, got {value}.")
    return value


def _float_range(value, name: str, *, lo_bound: float, hi_bound: float, hi_inclusive: bool) -> tuple[float, float]:
    """A number or a (min, max) pair inside (lo_bound, hi_bound) or (lo_bound, hi_bound]."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        pair = value
    else:
        pair = (value, value)
    out = []
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"{name}: expected a number or a (min, max) pair of numbers, got {value!r}.")
        out.append(float(v))
    lo, hi = out
    ok_hi = hi <= hi_bound if hi_inclusive else hi < hi_bound
    if not (lo_bound < lo <= hi and ok_hi and math.isfinite(hi)):
        bracket = "]" if hi_inclusive else ")"
        raise ValueError(
            f"{name}: need values in ({lo_bound:g}, {hi_bound:g}{bracket} with min <= max, got {value!r}."
        )
    return lo, hi


def _activation_names(value, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise TypeError(f"{name}: expected an activation name or a sequence of names, got {value!r}.") from None
    if not names:
        raise ValueError(f"{name}: give at least one activation name, e.g. {name}=('relu',).")
    for n in names:
        if not isinstance(n, str) or n not in ACTIVATIONS:
            raise ValueError(f"{name}: unknown activation {n!r}; known names are {sorted(ACTIVATIONS)}.")
    return names


def _dtype_list(value) -> tuple[np.dtype, ...]:
    if isinstance(value, (str, type, np.dtype)):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"dtypes: expected a dtype or a sequence of dtypes, got {value!r}.") from None
    if not items:
        raise ValueError("dtypes: give at least one of 'float64', 'float32'.")
    out = []
    for d in items:
        try:
            dt = np.dtype(d)
        except TypeError:
            raise TypeError(f"dtypes: {d!r} is not a dtype; use 'float64' or 'float32'.") from None
        if dt.name not in _DTYPES:
            raise ValueError(f"dtypes: sparsify computes in float64 or float32, got {dt.name}.")
        out.append(dt)
    return tuple(out)


def _magnitude_bounds(min_magnitude, max_magnitude) -> tuple[float, float]:
    lo = _positive(min_magnitude, "min_magnitude")
    hi = _positive(max_magnitude, "max_magnitude")
    if lo > hi:
        raise ValueError(f"min_magnitude: must not exceed max_magnitude, got {lo} > {hi}.")
    return lo, hi


def _values(dtype: np.dtype, lo: float, hi: float, *, signed: bool, zeros: bool):
    """Floats that are 0 (if ``zeros``) or have magnitude in [lo, hi], representable in ``dtype``."""
    width = 32 if dtype == np.float32 else 64
    if width == 32:
        lo = float(np.float32(lo)) if float(np.float32(lo)) >= lo else float(np.nextafter(np.float32(lo), np.float32(np.inf)))
        hi = float(np.float32(hi)) if float(np.float32(hi)) <= hi else float(np.nextafter(np.float32(hi), np.float32(0)))
    mag = st.floats(lo, hi, width=width, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    vals = st.tuples(mag, st.booleans()).map(lambda t: -t[0] if t[1] else t[0]) if signed else mag
    return st.one_of(st.just(0.0), vals) if zeros else vals


# --- public strategies -----------------------------------------------------------
def dtypes(dtypes: Sequence = ("float64", "float32")):
    """One of the floating dtypes sparsify computes in."""
    return st.sampled_from(_dtype_list(dtypes))


def weight_matrices(n_out, n_in, *, dtype="float64", min_magnitude: float = 1e-3, max_magnitude: float = 4.0,
                    zeros: bool = True):
    """Weight matrices of shape ``(n_out, n_in)`` with mixed signs (and exact zeros if ``zeros``)."""
    n_out = _size_range(n_out, "n_out")
    n_in = _size_range(n_in, "n_in")
    (dt,) = _dtype_list(dtype)
    lo, hi = _magnitude_bounds(min_magnitude, max_magnitude)
    shapes = st.tuples(st.integers(*n_out), st.integers(*n_in))
    return hnp.arrays(dt, shapes, elements=_values(dt, lo, hi, signed=True, zeros=bool(zeros)))


def networks(*, n_layers=(1, 3), widths=(1, 6), n_in=None, activations=("relu",),
             output_activations=("identity",), dtypes=("float64",), bias=None,
             min_magnitude: float = 1e-3, max_magnitude: float = 2.0, zeros: bool = True):
    """Dense :class:`sparsify.Network` objects.

    Parameters
    ----------
    n_layers : int or (min, max)
        Number of layers with weights (depth).
    widths : int or (min, max)
        Output width of each layer (drawn independently per layer).
    n_in : int or (min, max), optional
        Input width; defaults to ``widths``.
    activations : str or sequence of str
        Hidden activations, drawn per layer from these names.
    output_activations : str or sequence of str
        Activation of the last layer.
    dtypes : dtype or sequence of dtypes
        float64 and/or float32; one dtype per network.
    bias : bool or None
        True: every layer has a bias; False: none; None: drawn per layer.
    min_magnitude, max_magnitude : float
        Nonzero weights and biases have magnitudes in this range.
    zeros : bool
        Whether exact zero weights (and hence possibly empty sides) are drawn.
    """
    depth = _size_range(n_layers, "n_layers")
    width = _size_range(widths, "widths")
    fan_in = width if n_in is None else _size_range(n_in, "n_in")
    hidden = _activation_names(activations, "activations")
    output = _activation_names(output_activations, "output_activations")
    dts = _dtype_list(dtypes)
    if bias is not None and not isinstance(bias, bool):
        raise TypeError(f"bias: expected True, False or None (drawn per layer), got {bias!r}.")
    lo, hi = _magnitude_bounds(min_magnitude, max_magnitude)
    zeros = bool(zeros)

    @st.composite
    def _network(draw):
        dt = draw(st.sampled_from(dts))
        L = draw(st.integers(*depth))
        sizes = [draw(st.integers(*fan_in))] + [draw(st.integers(*width)) for _ in range(L)]
        layers = []
        for k in range(L):
            W = draw(hnp.arrays(dt, (sizes[k + 1], sizes[k]), elements=_values(dt, lo, hi, signed=True, zeros=zeros)))
            has_bias = draw(st.booleans()) if bias is None else bias
            b = (
                draw(hnp.arrays(dt, (sizes[k + 1],), elements=_values(dt, lo, hi, signed=True, zeros=True)))
                if has_bias else None
            )
            act = draw(st.sampled_from(output if k == L - 1 else hidden))
            layers.append(Dense(W, b, act))
        net = Network(layers)
        _note("net", network_code(net))
        return net

    return _network()


def inputs(n_in, *, n_points=(1, 8), signed: bool = False, dtype="float64", min_magnitude: float = 1e-3,
           max_magnitude: float = 4.0, zeros: bool = True):
    """Input batches of shape ``(n_points, n_in)``.

    ``n_in`` is an int or a :class:`sparsify.Network` (its input width and
    dtype are used). ``signed=False`` gives nonnegative batches (like the
    outputs of a ReLU layer); ``signed=True`` mixes signs, which exercises the
    sign split of inputs.
    """
    if isinstance(n_in, Network):
        dtype = n_in.dtype
        n_in = n_in.n_in
    n_in = _size_range(n_in, "n_in")
    rows = _size_range(n_points, "n_points")
    if not isinstance(signed, bool):
        raise TypeError(f"signed: expected True or False, got {signed!r}.")
    (dt,) = _dtype_list(dtype)
    lo, hi = _magnitude_bounds(min_magnitude, max_magnitude)
    shapes = st.tuples(st.integers(*rows), st.integers(*n_in))
    return hnp.arrays(dt, shapes, elements=_values(dt, lo, hi, signed=signed, zeros=bool(zeros)))


def networks_with_inputs(*, n_points=(1, 8), signed=None, input_max_magnitude: float = 4.0, **network_options):
    """Pairs ``(network, X)`` with ``X`` a batch that fits the network.

    ``signed=None`` draws nonnegative or signed batches; keyword arguments not
    listed here go to :func:`networks`.
    """
    if signed is not None and not isinstance(signed, bool):
        raise TypeError(f"signed: expected True, False or None (either), got {signed!r}.")
    rows = _size_range(n_points, "n_points")
    _positive(input_max_magnitude, "input_max_magnitude")
    nets = networks(**network_options)

    @st.composite
    def _pair(draw):
        net = draw(nets)
        sgn = draw(st.booleans()) if signed is None else signed
        X = draw(inputs(net, n_points=rows, signed=sgn, max_magnitude=input_max_magnitude))
        _note("X", array_code(X))
        return net, X

    return _pair()


def budgets(network, *, min_keep: float = 0.0, max_keep: float = 1.0):
    """Integer budgets ``B`` of kept weights with ``1 <= B <= network.n_weights``.

    ``min_keep``/``max_keep`` restrict ``B / n_weights`` (at least one weight
    is always kept).
    """
    if not isinstance(network, Network):
        raise TypeError(
            f"network: expected a sparsify.Network, got {type(network).__name__}; inside @given use "
            "data.draw(budgets(net)) or networks().flatmap(lambda net: budgets(net))."
        )
    for value, name in ((min_keep, "min_keep"), (max_keep, "max_keep")):
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"{name}: expected a fraction in [0, 1], got {type(value).__name__}.")
    lo_k, hi_k = float(min_keep), float(max_keep)
    if not (0.0 <= lo_k <= hi_k <= 1.0 and hi_k > 0.0):
        raise ValueError(f"min_keep/max_keep: need 0 <= min_keep <= max_keep <= 1 and max_keep > 0, got ({lo_k}, {hi_k}).")
    total = network.n_weights
    lo = min(total, max(1, int(math.ceil(lo_k * total))))
    hi = min(total, max(lo, int(math.floor(hi_k * total))))
    return st.integers(lo, hi)


def keeps(min_keep: float = 0.01, max_keep: float = 1.0):
    """Fractions ``keep`` in ``[min_keep, max_keep]`` inside (0, 1]."""
    lo, hi = _float_range((min_keep, max_keep), "min_keep/max_keep", lo_bound=0.0, hi_bound=1.0, hi_inclusive=True)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def eps_delta(eps=(1e-3, 1.0), delta=(1e-16, 0.5)):
    """Pairs ``(eps, delta)``: ``eps`` uniform in its range, ``delta`` log-uniform in its range.

    ``eps`` must lie in (0, inf) and ``delta`` in (0, 1). Each is a number
    (fixed) or a (min, max) pair.
    """
    e_lo, e_hi = _float_range(eps, "eps", lo_bound=0.0, hi_bound=math.inf, hi_inclusive=False)
    d_lo, d_hi = _float_range(delta, "delta", lo_bound=0.0, hi_bound=1.0, hi_inclusive=False)
    eps_s = st.just(e_lo) if e_lo == e_hi else st.floats(e_lo, e_hi)
    if d_lo == d_hi:
        delta_s = st.just(d_lo)
    else:
        delta_s = st.floats(math.log(d_lo), math.log(d_hi)).map(lambda t: min(max(math.exp(t), d_lo), d_hi))
    return st.tuples(eps_s, delta_s)


def side_sensitivities(n=(1, 30), *, dead: bool = False, sorted_desc: bool = False):
    """Sensitivity vectors ``s`` of one side: ``0 <= s_j <= 1`` and ``sum(s) >= 1`` up to rounding (a live side).

    Every such vector is realisable by some batch S. ``dead=True`` draws all
    zeros instead (a side with no mass on S). ``sorted_desc`` sorts them as
    :func:`sparsify.bounds.eps_det` expects.
    """
    size = _size_range(n, "n")
    if not isinstance(dead, bool) or not isinstance(sorted_desc, bool):
        raise TypeError("dead and sorted_desc: expected True or False.")
    if dead:
        return st.integers(*size).map(lambda k: np.zeros(k))

    def finish(s):
        total = s.sum()
        if total < 1.0:
            s = s / total  # every s_j <= total, so s_j / total <= 1 and the sum becomes 1
        s = np.minimum(s, 1.0)
        return np.sort(s)[::-1].copy() if sorted_desc else s

    elems = st.one_of(st.just(0.0), st.floats(1e-3, 1.0))
    vec = hnp.arrays(np.float64, st.integers(*size), elements=elems)
    return vec.filter(lambda s: s.sum() > 0).map(finish)


from ._conv_strategies import conv_inputs, conv_networks, conv_networks_with_inputs  # noqa: E402
