"""The 2-D convolution layer (NCHW, the PyTorch/ONNX layout; docs/theory.md S15).

``Conv2d`` computes ``a = phi(conv(a_prev, W) + b)`` with ``W`` of shape
``(c_out, c_in, kh, kw)``: a cross-correlation, as PyTorch's ``Conv2d``, with
stride, zero padding and dilation. Its *weight-matrix view* is
``W.reshape(c_out, c_in*kh*kw)``, and its *input matrix* the patch matrix
(im2col, zero padding included, :mod:`sparsify._patches`): row ``(x, p)`` holds
the inputs under the kernel at output position ``p`` of point ``x``. Pruning code
treats the layer as a dense layer whose points are these ``(x, p)`` pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _patches
from ..activations import get_activation
from ._common import check_image_shape, check_pair, check_weight_bias


@dataclass(frozen=True, eq=False)
class Conv2d:
    """A 2-D convolution ``a = phi(conv(a_prev, weight) + bias)`` over NCHW inputs.

    Parameters
    ----------
    weight : array, shape (c_out, c_in, kh, kw)
    bias : array, shape (c_out,), or None
    activation : str
        A name from :data:`sparsify.activations.ACTIVATIONS`.
    stride, padding, dilation : int or (int, int)
        As in PyTorch (``padding`` pads with zeros on both sides); ``stride`` and
        ``dilation`` >= 1, ``padding`` >= 0.
    groups : int
        Only 1 is supported (every output channel sees every input channel).
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "identity"
    stride: tuple = 1
    padding: tuple = 0
    dilation: tuple = 1
    groups: int = 1

    kind = "conv2d"
    prunable = True

    def __post_init__(self):
        if self.groups != 1 or isinstance(self.groups, bool):
            raise ValueError(
                f"groups: only groups=1 is supported (each output channel reads all input channels), got "
                f"{self.groups!r}; a grouped convolution can be written as one Conv2d per group."
            )
        w, b = check_weight_bias(self.weight, self.bias, 4)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "stride", check_pair(self.stride, "stride", low=1))
        object.__setattr__(self, "padding", check_pair(self.padding, "padding", low=0))
        object.__setattr__(self, "dilation", check_pair(self.dilation, "dilation", low=1))
        get_activation(self.activation)

    # --- shape facts -----------------------------------------------------------
    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    @property
    def c_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        """Output channels (the neurons of the weight-matrix view)."""
        return self.weight.shape[0]

    @property
    def n_in(self) -> int:
        """Columns of the weight-matrix view, ``k = c_in*kh*kw``."""
        return self.weight[0].size

    @property
    def dtype(self) -> np.dtype:
        return self.weight.dtype

    @property
    def weight_matrix(self) -> np.ndarray:
        """``weight.reshape(c_out, c_in*kh*kw)`` (a read-only view)."""
        return self.weight.reshape(self.n_out, self.n_in)

    def _geometry(self):
        return self.kernel_size, self.stride, self.padding, self.dilation

    def output_shape(self, in_shape) -> tuple[int, int, int]:
        """``(c_out, oh, ow)`` for inputs of shape ``in_shape = (c_in, h, w)`` per point."""
        c, h, w = check_image_shape(in_shape, "Conv2d")
        if c != self.c_in:
            raise ValueError(f"Conv2d: weight of shape {self.weight.shape} takes {self.c_in} input channels, "
                             f"but its input has {c} (shape {(c, h, w)} per point).")
        oh, ow = _patches.output_hw((h, w), *self._geometry())
        if oh < 1 or ow < 1:
            raise ValueError(
                f"Conv2d: a kernel {self.kernel_size} with dilation {self.dilation} and padding {self.padding} "
                f"does not fit an input of size {(h, w)}; pad the input or use a smaller kernel."
            )
        return self.n_out, oh, ow

    def patches_per_point(self, in_shape) -> int:
        """``P``: output positions (patches) per point for inputs of shape ``in_shape``."""
        _, oh, ow = self.output_shape(in_shape)
        return oh * ow

    # --- computing ---------------------------------------------------------------
    def input_matrix(self, a_prev: np.ndarray) -> np.ndarray:
        """The patch matrix ``(n*P, c_in*kh*kw)`` of ``a_prev`` (n, c_in, h, w), rows ``(x, p)``.

        It holds every patch of the batch at once: for small batches (tests,
        teaching); the pipeline streams blocks of points instead.
        """
        return _patches.extract_patches(a_prev, *self._geometry())

    def preactivation(self, a_prev: np.ndarray, matmul=np.matmul) -> np.ndarray:
        """``conv(a_prev, weight) + bias``, shape (n, c_out, oh, ow), as an im2col GEMM."""
        return _patches.conv2d(a_prev, self.weight_matrix, self.bias, *self._geometry(), matmul=matmul)

    def forward(self, a_prev: np.ndarray, matmul=np.matmul) -> np.ndarray:
        return get_activation(self.activation)(self.preactivation(a_prev, matmul))

    def with_weight(self, weight: np.ndarray) -> "Conv2d":
        """A copy with another weight of the shape of ``weight`` or of ``weight_matrix``
        (the pruning code works on the matrix view and hands it back as it is)."""
        shape = np.shape(weight)
        if shape == self.weight_matrix.shape:
            weight = np.reshape(weight, self.weight.shape)
        elif shape != self.weight.shape:
            raise ValueError(f"weight: expected shape {self.weight.shape} (or its matrix view "
                             f"{self.weight_matrix.shape}), got {shape}.")
        return Conv2d(np.asarray(weight, dtype=self.dtype), self.bias, self.activation,
                      self.stride, self.padding, self.dilation)

    def astype(self, dtype) -> "Conv2d":
        dtype = np.dtype(dtype)
        return Conv2d(self.weight.astype(dtype), None if self.bias is None else self.bias.astype(dtype),
                      self.activation, self.stride, self.padding, self.dilation)
