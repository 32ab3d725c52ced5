"""Parameter-free layers: max and average pooling, and flattening (NCHW).

Pools slide a ``kernel_size`` window with ``stride`` (default: the kernel size,
as PyTorch) over each channel; ``padding`` (at most half the kernel, as PyTorch
requires) pads both sides. :class:`MaxPool2d` pads with ``-inf``, so padding never
wins a maximum. :class:`AvgPool2d` pads with zeros and always divides by
``kh*kw``: padded zeros count, as PyTorch's default ``count_include_pad=True``.
Output sizes use floor mode (``ceil_mode=False``). :class:`Flatten` turns
``(n, c, h, w)`` into ``(n, c*h*w)`` in C order, as ``torch.flatten(x, 1)``.
None of them has weights: they are not prunable, and a pruned network keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _patches
from ._common import check_image_shape, check_pair


def _check_pool(layer) -> None:
    kernel = check_pair(layer.kernel_size, "kernel_size", low=1)
    stride = kernel if layer.stride is None else check_pair(layer.stride, "stride", low=1)
    padding = check_pair(layer.padding, "padding", low=0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"padding: must be at most half the kernel size {kernel}, got {padding} (as in PyTorch).")
    object.__setattr__(layer, "kernel_size", kernel)
    object.__setattr__(layer, "stride", stride)
    object.__setattr__(layer, "padding", padding)


def _pool_output_shape(layer, in_shape, name):
    c, h, w = check_image_shape(in_shape, name)
    oh, ow = _patches.output_hw((h, w), layer.kernel_size, layer.stride, layer.padding)
    if oh < 1 or ow < 1:
        raise ValueError(f"{name}: a window {layer.kernel_size} with padding {layer.padding} does not fit an "
                         f"input of size {(h, w)}.")
    return c, oh, ow


@dataclass(frozen=True, eq=False)
class _Pool2d:
    """What both pools share: the window, its validation and the output shape."""

    kernel_size: tuple
    stride: tuple | None = None
    padding: tuple = 0

    prunable = False
    dtype = None

    def __post_init__(self):
        _check_pool(self)

    def output_shape(self, in_shape):
        return _pool_output_shape(self, in_shape, type(self).__name__)

    def astype(self, dtype):
        return self


@dataclass(frozen=True, eq=False)
class MaxPool2d(_Pool2d):
    """Maximum over each ``kernel_size`` window of each channel (padding never wins)."""

    kind = "maxpool2d"

    def forward(self, a_prev: np.ndarray, matmul=None) -> np.ndarray:
        V = _patches.windows(a_prev, self.kernel_size, self.stride, self.padding, pad_value=-np.inf)
        return V.max(axis=(4, 5))


@dataclass(frozen=True, eq=False)
class AvgPool2d(_Pool2d):
    """Mean over each ``kernel_size`` window of each channel, padded zeros included
    (PyTorch's default ``count_include_pad=True``)."""

    kind = "avgpool2d"

    def forward(self, a_prev: np.ndarray, matmul=None) -> np.ndarray:
        V = _patches.windows(a_prev, self.kernel_size, self.stride, self.padding, pad_value=0.0)
        total = V.sum(axis=(4, 5))
        return total / a_prev.dtype.type(self.kernel_size[0] * self.kernel_size[1])


@dataclass(frozen=True, eq=False)
class Flatten:
    """``(n, c, h, w)`` -> ``(n, c*h*w)`` in C order (as ``torch.flatten(x, 1)``)."""

    kind = "flatten"
    prunable = False
    dtype = None

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, a_prev: np.ndarray, matmul=None) -> np.ndarray:
        return a_prev.reshape(a_prev.shape[0], -1)

    def astype(self, dtype) -> "Flatten":
        return self
