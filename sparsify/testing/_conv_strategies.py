"""Hypothesis strategies for small convolutional networks (docs/theory.md S15).

Re-exported by :mod:`sparsify.testing.strategies`: :func:`conv_networks`,
:func:`conv_inputs` and :func:`conv_networks_with_inputs`. Every drawn network
is valid by construction (each kernel fits its input); sizes stay small so that
the readable twins in :mod:`sparsify.reference`, which loop over points and
patches, can check them.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..layers import AvgPool2d, Conv2d, Flatten, MaxPool2d, Residual
from ..network import Dense, Network
from .strategies import _activation_names, _dtype_list, _magnitude_bounds, _positive, _size_range, _values


def _optional_flag(value, name: str):
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name}: expected True, False or None (drawn), got {value!r}.")
    return st.booleans() if value is None else st.just(value)


@st.composite
def _axis(draw, size: int, kernels: tuple):
    """(kernel, stride, padding, dilation) along one axis of length ``size`` that fits it."""
    padding = draw(st.integers(0, 1))
    top = min(kernels[1], size + 2 * padding)
    kernel = draw(st.integers(min(kernels[0], top), top))
    max_d = 1 if kernel == 1 else min(2, (size + 2 * padding - 1) // (kernel - 1))
    return kernel, draw(st.integers(1, 2)), padding, draw(st.integers(1, max_d))


def conv_networks(*, channels=(1, 3), image=(3, 8), kernel=(1, 3), n_conv=(1, 2), residual=None, pool=None,
                  head=None, activations=("relu",), dtypes=("float64",), min_magnitude: float = 1e-3,
                  max_magnitude: float = 2.0, zeros: bool = True):
    """Small valid CNNs: ``n_conv`` convolutions (strides, paddings, dilations, non-square
    kernels drawn per axis), then optionally a residual block (identity or 1x1 conv
    shortcut), a max or average pool, and a Flatten + Dense head.

    Parameters
    ----------
    channels, image, kernel, n_conv : int or (min, max)
        Channels of every layer, height and width of the input, kernel size per
        axis, and the number of plain convolutions.
    residual, pool, head : bool or None
        Include the part (True), leave it out (False), or draw (None).
    activations : str or sequence of str
        Activations of the convolutions (the head's is "identity").
    dtypes, min_magnitude, max_magnitude, zeros
        As in :func:`sparsify.testing.strategies.networks`.
    """
    chans = _size_range(channels, "channels")
    side = _size_range(image, "image")
    kern = _size_range(kernel, "kernel")
    depth = _size_range(n_conv, "n_conv", minimum=0)
    flags = [_optional_flag(v, n) for v, n in ((residual, "residual"), (pool, "pool"), (head, "head"))]
    acts = _activation_names(activations, "activations")
    dts = _dtype_list(dtypes)
    lo, hi = _magnitude_bounds(min_magnitude, max_magnitude)
    if depth[1] == 0 and residual is False:
        raise ValueError("n_conv: with residual=False at least one convolution is needed, e.g. n_conv=(1, 2).")

    @st.composite
    def _network(draw):
        dt = draw(st.sampled_from(dts))

        def array(shape, zeros_ok=zeros):
            return draw(hnp.arrays(dt, shape, elements=_values(dt, lo, hi, signed=True, zeros=zeros_ok)))

        def conv(c_in, c_out, geometry, act):
            (kh, sh, ph, dh), (kw, sw, pw, dw) = geometry
            b = array((c_out,), True) if draw(st.booleans()) else None
            return Conv2d(array((c_out, c_in, kh, kw)), b, act, (sh, sw), (ph, pw), (dh, dw))

        c, h, w = draw(st.integers(*chans)), draw(st.integers(*side)), draw(st.integers(*side))
        input_shape = (c, h, w)
        shape, layers = input_shape, []
        with_residual, with_pool, with_head = (draw(f) for f in flags)
        n = draw(st.integers(max(depth[0], 0 if with_residual else 1), depth[1]))
        for _ in range(n):
            geometry = (draw(_axis(shape[1], kern)), draw(_axis(shape[2], kern)))
            layers.append(conv(shape[0], draw(st.integers(*chans)), geometry, draw(st.sampled_from(acts))))
            shape = layers[-1].output_shape(shape)
        if with_residual:  # "same" convolutions, so the branch keeps the spatial size
            k = draw(st.sampled_from([1, 3] if kern[1] >= 3 else [1]))
            same = ((k, 1, k // 2, 1), (k, 1, k // 2, 1))
            mid, out = draw(st.integers(*chans)), draw(st.integers(*chans))
            branch = [conv(shape[0], mid, same, draw(st.sampled_from(acts))),
                      conv(mid, out, ((1, 1, 0, 1), (1, 1, 0, 1)), "identity")]
            shortcut = None
            if out != shape[0] or draw(st.booleans()):
                shortcut = conv(shape[0], out, ((1, 1, 0, 1), (1, 1, 0, 1)), "identity")
            layers.append(Residual(branch, draw(st.sampled_from(acts)), shortcut))
            shape = layers[-1].output_shape(shape)
        if with_pool and min(shape[1:]) >= 2:
            cls = draw(st.sampled_from([MaxPool2d, AvgPool2d]))
            layers.append(cls(2, draw(st.integers(1, 2)), draw(st.integers(0, 1))))
            shape = layers[-1].output_shape(shape)
        if with_head:
            n_out = draw(st.integers(1, 4))
            b = array((n_out,), True) if draw(st.booleans()) else None
            layers += [Flatten(), Dense(array((n_out, int(np.prod(shape)))), b, "identity")]
        return Network(layers, input_shape)

    return _network()


def conv_inputs(network, *, n_points=(1, 4), signed: bool = False, max_magnitude: float = 4.0, zeros: bool = True):
    """NCHW batches ``(n_points, *network.input_shape)`` in the network's dtype."""
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}; inside @given use "
                        "conv_networks().flatmap(lambda net: conv_inputs(net)).")
    rows = _size_range(n_points, "n_points")
    if not isinstance(signed, bool):
        raise TypeError(f"signed: expected True or False, got {signed!r}.")
    hi = _positive(max_magnitude, "max_magnitude")
    lo = min(1e-3, hi)
    shapes = st.integers(*rows).map(lambda n: (n, *network.input_shape))
    return hnp.arrays(network.dtype, shapes, elements=_values(network.dtype, lo, hi, signed=signed, zeros=zeros))


def conv_networks_with_inputs(*, n_points=(1, 4), signed=None, **network_options):
    """Pairs ``(network, X)`` of :func:`conv_networks` and a batch that fits it; ``signed=None``
    draws nonnegative or signed batches."""
    if signed is not None and not isinstance(signed, bool):
        raise TypeError(f"signed: expected True, False or None (either), got {signed!r}.")
    rows = _size_range(n_points, "n_points")
    nets = conv_networks(**network_options)

    @st.composite
    def _pair(draw):
        net = draw(nets)
        sgn = draw(st.booleans()) if signed is None else signed
        return net, draw(conv_inputs(net, n_points=rows, signed=sgn))

    return _pair()
