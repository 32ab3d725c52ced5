"""The report's measured side errors: the fast path (stacked product + kernel)
against the readable NumPy twin in sparsify.reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsify as sp
from sparsify import reference
from sparsify.prune import side_errors


def _check(A, W, W_hat, rtol):
    got = side_errors(A, W, W_hat)
    want = reference.side_errors(A, W, W_hat)
    assert got.shape == want.shape == (W.shape[0], 2) and got.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


@given(st.integers(1, 7), st.integers(1, 8), st.integers(1, 12), st.booleans(), st.integers(0, 2**32 - 1))
def test_side_errors_equal_the_reference(n_out, n_in, points, signed, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((points, n_in)) if signed else rng.random((points, n_in))
    A[rng.random(A.shape) < 0.3] = 0.0
    W = rng.standard_normal((n_out, n_in)) * (rng.random((n_out, n_in)) < 0.8)
    W_hat = np.where(rng.random(W.shape) < 0.5, W * rng.uniform(0.5, 3.0, W.shape), 0.0)
    _check(A, W, W_hat, 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_side_errors_of_a_real_prune_equal_the_reference(dtype):
    """Large enough that the product is split into row blocks (4 x 300 rows)."""
    rng = np.random.default_rng(0)
    net = sp.random_mlp([200, 300, 10], rng=rng, dtype=dtype)
    X = rng.random((200, 200)).astype(dtype)
    res = sp.prune(net, X, keep=0.1, rng=1)
    A = net.trace(X)[0]
    _check(A, net.layers[0].weight, res.network.weights[0], 1e-12 if dtype == np.float64 else 1e-4)


def test_sides_without_mass_at_any_point_are_nan():
    A = np.array([[1.0, 0.0], [2.0, 0.0]])  # input 1 is never active
    W = np.array([[0.5, -1.0], [-2.0, 3.0]])
    W_hat = np.array([[1.0, 0.0], [0.0, 3.0]])
    got = side_errors(A, W, W_hat)
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 0])  # the sides feeding only on input 1
    assert got[0, 0] == pytest.approx(1.0)  # Ẑ+ = 2 Z+ at every point
    np.testing.assert_array_equal(np.isnan(got), np.isnan(reference.side_errors(A, W, W_hat)))
