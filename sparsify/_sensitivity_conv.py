"""Sensitivity of a convolution over its patches (docs/theory.md S15).

A point of a conv layer is a pair (x, patch p): with the weight-matrix view
``W = weight.reshape(c_out, c_in*kh*kw)`` and the patch rows ``A_xp`` (zero
padding included), S1-S4 hold per pair exactly as for a dense layer. Two
reductions over the patches of a point:

``"max"``  ``s_ij = max_x max_p g_ij(x, p)``: the patch rows of a block of points
           are the rows of a dense layer's block, so they go through the dense
           path unchanged (:class:`sparsify.sensitivity._LayerMaxima`: one ``Z``
           product, the reciprocals, the max-times kernel), block after block.
``"mean"`` ``s_ij = max_x (1/P) sum_p g_ij(x, p)
           = |W_ij| max_x (1/P) sum_p r^{sign W_ij}_{xp,i} A_{xp,j}``: per point a
           product of its reciprocal matrix transposed (2 c_out x P) with its
           patch matrix (P x k), a batched GEMM, then the side of each weight
           picked by its sign and the maximum over points taken.

Blocks hold at most :data:`sparsify._patches.ROWS_PER_BLOCK` patch rows, so the
patch matrix of all of S never exists. Sign split (S1): a block with a negative
entry is replaced by its parts ``max(A, 0)`` and ``max(-A, 0)``; for a
nonnegative point that adds an all-zero part whose ``g`` is 0, so the maxima
do not depend on the blocks. Readable twin: :func:`sparsify.reference.sensitivity_conv_layer`.
"""
from __future__ import annotations

import numpy as np

from . import _blas
from ._patches import extract_patches, points_per_block

#: the reductions over the patches of a point
PATCH_REDUCTIONS = ("max", "mean")

#: at most this many (point, patch) rows of the first points of S are kept for
#: ``prune``'s measured errors (whole points, at least one), so a convolution's
#: head costs about the memory of a dense layer's
HEAD_ROWS = 4096


class ConvMaxima:
    """Running sensitivities of one :class:`~sparsify.Conv2d` over blocks of S.

    ``conv`` the layer, ``in_shape`` its input shape per point (c_in, h, w),
    ``tiles`` the max-times tiles, ``reduction`` one of :data:`PATCH_REDUCTIONS`.
    """

    def __init__(self, conv, in_shape, tiles: dict, reduction: str):
        from .sensitivity import _LayerMaxima

        self.conv, self.reduction = conv, reduction
        self.geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation)
        self.P = conv.patches_per_point(in_shape)
        self.step = points_per_block(self.P)
        self.W = np.ascontiguousarray(conv.weight_matrix)
        self._buf = None
        self._head_points = max(1, HEAD_ROWS // self.P)  # points whose patches the head may hold
        self._kept = 0  # points whose patches the head holds
        self.inner = _LayerMaxima(self.W, tiles)  # "max": the whole path; "mean": the head only
        if reduction == "mean":
            self.stacked = np.concatenate([np.maximum(self.W, 0), np.minimum(self.W, 0)])  # [W+; W-]
            self.positive = self.W > 0
            self.R = np.zeros(self.W.shape, dtype=self.W.dtype)

    @property
    def head(self) -> list:
        """The :class:`~sparsify.sensitivity.HeadBlock` list of the kept first points' patch rows."""
        return self.inner.head

    def update(self, A: np.ndarray, keep: int = 0) -> None:
        """Fold a block ``A`` (points, c_in, h, w) of finite inputs into the running maxima;
        with ``keep > 0`` the patch rows of its first ``keep`` points (up to
        :data:`HEAD_ROWS` rows over all of S) are kept in :attr:`head`."""
        n = A.shape[0]
        if self._buf is None:
            self._buf = np.empty((min(self.step, max(n, 1)) * self.P, self.W.shape[1]), dtype=self.W.dtype)
        for start in range(0, n, self.step):
            block = A[start:start + self.step]
            b = block.shape[0]
            if b * self.P > self._buf.shape[0]:
                self._buf = np.empty((b * self.P, self.W.shape[1]), dtype=self.W.dtype)
            patches = extract_patches(block, *self.geometry, out=self._buf[:b * self.P])
            take = max(0, min(b, keep - start, self._head_points - self._kept))
            self._kept += take
            if self.reduction == "max":
                self.inner.update(patches, take * self.P)
                continue
            if take:  # the head's rows, through the dense path (their maxima are not used)
                self.inner.update(np.ascontiguousarray(patches[:take * self.P]), take * self.P)
            if patches.min() < 0:
                self._update_mean(np.maximum(patches, 0), b)
                self._update_mean(np.maximum(-patches, 0), b)
            else:
                self._update_mean(patches, b)

    def _update_mean(self, patches: np.ndarray, b: int) -> None:
        c_out, k = self.W.shape
        Z = _blas.matmul(patches, self.stacked.T)  # (b P, 2 c_out): Z+ then Z- of every (x, p)
        with np.errstate(divide="ignore", over="ignore"):
            r = 1 / np.abs(Z)
        r[~(r < np.inf)] = 0  # Z = 0 (and subnormal Z): no mass, g = 0
        rT = np.ascontiguousarray(r.reshape(b, self.P, 2 * c_out).transpose(0, 2, 1))
        G = np.matmul(rT, patches.reshape(b, self.P, k))  # (b, 2 c_out, k): sum_p r A per point
        side = np.where(self.positive, G[:, :c_out], G[:, c_out:])
        np.maximum(self.R, side.max(axis=0), out=self.R)

    def result(self) -> np.ndarray:
        """``s``, shaped like the layer's weight, clamped to [0, 1] without negative zeros."""
        if self.reduction == "max":
            s = self.inner.result()
        else:
            s = np.minimum(np.abs(self.W) * self.R / self.W.dtype.type(self.P), 1) + 0
        return s.reshape(self.conv.weight.shape)


def layer_state(layer, in_shape, tiles: dict, patch_reduction: str):
    """The running maxima of one prunable layer: its rows (dense) or its patches (conv)."""
    if layer.kind == "conv2d":
        return ConvMaxima(layer, in_shape, tiles, patch_reduction)
    from .sensitivity import _LayerMaxima

    return _LayerMaxima(layer.weight, tiles)
