"""The report's measured side errors: the fast path (stacked product + kernel)
against the readable NumPy twin in sparsify.reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsify as sp
from sparsify import reference
from sparsify.report import side_errors


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


# --- the report's errors come from the sensitivity step's own blocks ---------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("signed", [False, True])
def test_report_errors_from_the_head_equal_the_reference(dtype, signed):
    """``head_side_errors`` on the blocks kept by the sensitivity step (several blocks,
    sign-split or not) equals the reference on the same points."""
    from sparsify.report import head_side_errors
    from sparsify.sensitivity import sensitivity_and_head

    rng = np.random.default_rng(7)
    net = sp.random_mlp([30, 40, 5], rng=rng, dtype=dtype)
    X = (rng.standard_normal((90, 30)) if signed else rng.random((90, 30))).astype(dtype)
    s_list, n_points, heads = sensitivity_and_head(net, X, 70, chunk_size=32)
    assert n_points == 90 and sum(b.points for b in heads[0]) == 70 * (2 if signed else 1)
    res = sp.prune(net, X, keep=0.3, rng=0)
    inputs = net.trace(X[:70])
    for k, layer in enumerate(net.layers):
        got = head_side_errors(heads[k], layer.weight, res.network.weights[k])
        want = reference.side_errors(inputs[k], layer.weight, res.network.weights[k])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-10 if dtype == np.float64 else 2e-3, atol=1e-10)


def test_sides_kept_whole_have_error_exactly_zero():
    """Ẑ of a side kept whole is the same product as Z, bit for bit."""
    rng = np.random.default_rng(8)
    net = sp.random_mlp([50, 60, 4], rng=rng)
    X = rng.random((700, 50))  # two blocks of the sensitivity step
    res = sp.prune(net, X, keep=1.0, method="det", rng=0)
    for row in res.report.layers:
        assert row["err_max"] == 0.0


def test_report_is_the_same_for_a_stream_and_an_array():
    rng = np.random.default_rng(9)
    net = sp.random_mlp([20, 30, 3], rng=rng)
    X = rng.standard_normal((300, 20))
    whole = sp.prune(net, X, keep=0.2, rng=1).report
    streamed = sp.prune(net, (X[a:a + 37] for a in range(0, 300, 37)), keep=0.2, rng=1).report
    for a, b in zip(whole.layers, streamed.layers):
        assert a["err_max"] == b["err_max"] and a["err_mean"] == b["err_mean"]
