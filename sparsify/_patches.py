"""Patch extraction (im2col) for convolutions and pools, one block of points at a time.

A convolution with kernel ``(kh, kw)`` over an NCHW input is a product of the
*patch matrix* with the weight-matrix view ``W.reshape(c_out, c_in*kh*kw)``
(docs/theory.md S15). Row ``(x, oh, ow)`` of the patch matrix holds the input
values under the kernel at output position ``(oh, ow)`` of point ``x``, in the
column order ``(c, i, j)`` of that view (C order, as ``W.reshape`` lays it out);
positions outside the image read the padding value (0 for convolutions and
average pools, so padding patches are ordinary patches with zeros in them).

Only windows of the input are read, through NumPy stride tricks, and copied
once into a caller's preallocated matrix; callers stream blocks of points so
the patch matrix of a whole batch never exists at once. This module imports
nothing of the pipeline (a kernel module).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

#: rows (point, patch pairs) of one patch block; blocks of points are sized so
#: their patch matrix has at most this many rows (at least one point per block)
ROWS_PER_BLOCK = 8192


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a sliding window along one axis (floor mode, as PyTorch)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_hw(hw, kernel, stride, padding, dilation=(1, 1)) -> tuple[int, int]:
    """``(oh, ow)`` for an input of spatial size ``hw``; all arguments are pairs."""
    return (output_size(hw[0], kernel[0], stride[0], padding[0], dilation[0]),
            output_size(hw[1], kernel[1], stride[1], padding[1], dilation[1]))


def points_per_block(patches_per_point: int, rows: int = ROWS_PER_BLOCK) -> int:
    """Points of one block so that its patch matrix has at most ``rows`` rows (>= 1)."""
    return max(1, rows // max(1, patches_per_point))


def windows(X: np.ndarray, kernel, stride, padding, dilation=(1, 1), pad_value=0.0) -> np.ndarray:
    """A read-only view ``V[x, c, oh, ow, i, j]`` of every kernel window of ``X`` (n, c, H, W).

    ``V[x, c, oh, ow, i, j] = Xpad[x, c, oh*sh + i*dh, ow*sw + j*dw]`` where ``Xpad``
    is ``X`` padded by ``padding`` with ``pad_value`` (a padded copy is made only
    when the padding is nonzero).
    """
    n, c, H, W = X.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh, ow = output_hw((H, W), kernel, stride, padding, dilation)
    if ph or pw:
        Xp = np.full((n, c, H + 2 * ph, W + 2 * pw), pad_value, dtype=X.dtype)
        Xp[:, :, ph:ph + H, pw:pw + W] = X
    else:
        Xp = X
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    V = sliding_window_view(Xp, span, axis=(2, 3))  # (n, c, H', W', span_h, span_w)
    return V[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def extract_patches(X: np.ndarray, kernel, stride, padding, dilation=(1, 1), out=None) -> np.ndarray:
    """The patch matrix of a block ``X`` (n, c, H, W): shape ``(n*oh*ow, c*kh*kw)``.

    Rows ordered ``(x, oh, ow)``, columns ``(c, i, j)``; zero padding included.
    ``out``, if given, is a C-contiguous matrix of exactly that shape and is filled
    in place (callers reuse one buffer block after block).
    """
    n, c = X.shape[:2]
    V = windows(X, kernel, stride, padding, dilation)
    oh, ow = V.shape[2], V.shape[3]
    shape = (n * oh * ow, c * kernel[0] * kernel[1])
    if out is None:
        out = np.empty(shape, dtype=X.dtype)
    elif out.shape != shape or not out.flags.c_contiguous:
        raise ValueError(f"out: expected a C-contiguous array of shape {shape}, got {out.shape}.")
    np.copyto(out.reshape(n, oh, ow, c, kernel[0], kernel[1]), V.transpose(0, 2, 3, 1, 4, 5))
    return out


def column_square_sums(X: np.ndarray, kernel, stride, padding, dilation=(1, 1),
                       rows: int = ROWS_PER_BLOCK) -> np.ndarray:
    """``sum over rows (x, p) of A_xp,j ** 2`` (float64, shape (c*kh*kw,)) for the patch matrix
    ``A`` of ``X`` (n, c, H, W), built block by block in one reused buffer."""
    n, c = X.shape[:2]
    oh, ow = output_hw(X.shape[2:], kernel, stride, padding, dilation)
    P, k = oh * ow, c * kernel[0] * kernel[1]
    out = np.zeros(k)
    step = points_per_block(P, rows)
    buf = np.empty((min(step, max(n, 1)) * P, k), dtype=X.dtype)
    for start in range(0, n, step):
        block = X[start:start + step]
        patches = extract_patches(block, kernel, stride, padding, dilation, out=buf[:block.shape[0] * P])
        out += np.einsum("ij,ij->j", patches, patches, dtype=np.float64)
    return out


def conv2d(X: np.ndarray, Wm: np.ndarray, bias, kernel, stride, padding, dilation,
           matmul=np.matmul, rows: int = ROWS_PER_BLOCK) -> np.ndarray:
    """Convolution (cross-correlation, as PyTorch) of ``X`` (n, c, H, W) as an im2col GEMM.

    ``Wm`` (c_out, c*kh*kw) is the weight-matrix view; returns (n, c_out, oh, ow).
    Points go through in blocks of at most ``rows`` patch rows, each block's patch
    matrix written into one reused buffer and multiplied by ``Wm.T`` with ``matmul``.
    """
    n = X.shape[0]
    oh, ow = output_hw(X.shape[2:], kernel, stride, padding, dilation)
    P = oh * ow
    c_out, k = Wm.shape
    out = np.empty((n, c_out, oh, ow), dtype=Wm.dtype)
    step = points_per_block(P, rows)
    buf = np.empty((min(step, n) * P, k), dtype=Wm.dtype)
    for start in range(0, n, step):
        block = X[start:start + step]
        b = block.shape[0]
        patches = extract_patches(block, kernel, stride, padding, dilation, out=buf[:b * P])
        Z = matmul(patches, Wm.T)
        out[start:start + b] = Z.reshape(b, oh, ow, c_out).transpose(0, 3, 1, 2)
    if bias is not None:
        out += bias[None, :, None, None]
    return out
