"""The formulas of sparsify.bounds checked against each other and against their definitions."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsify
from sparsify import bounds
from sparsify import reference as ref
from sparsify.testing import strategies as sst

m_values = st.integers(1, 10**7)
S_values = st.floats(1.0, 500.0)
deltas = st.floats(1e-16, 0.5)
Cs = st.floats(1.0, 10.0)


# --- size of S -------------------------------------------------------------------
def test_size_of_S_reproduces_the_authors_152_points():
    # 784-300-100-10: eta = 300 + 100 + 10, eta* = 300, K' = 3, delta = 1e-16
    assert bounds.size_of_S(410, 300, delta=1e-16, K=3) == 152


def test_network_eta_of_the_authors_mlp():
    net = sparsify.random_mlp([784, 300, 100, 10], rng=0)
    eta, eta_star = bounds.network_eta(net)
    assert (eta, eta_star) == (410, 300)
    assert bounds.size_of_S(eta, eta_star) == 152


def test_size_of_S_is_the_ceiling_of_the_formula():
    for eta, eta_star, delta, K in [(10, 10, 0.1, 1.0), (1000, 500, 1e-9, 3.0), (3, 1, 0.5, 2.5)]:
        assert bounds.size_of_S(eta, eta_star, delta, K) == math.ceil(K * math.log(8 * eta * eta_star / delta))


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        (dict(eta=0, eta_star=1), ValueError, "eta"),
        (dict(eta=5, eta_star=6), ValueError, "eta_star"),
        (dict(eta=5, eta_star=2, delta=0.0), ValueError, "delta"),
        (dict(eta=5, eta_star=2, delta=1.5), ValueError, "delta"),
        (dict(eta=5.5, eta_star=2), TypeError, "eta"),
        (dict(eta=5, eta_star=2, K=-1), ValueError, "K"),
    ],
)
def test_size_of_S_rejects_bad_arguments(kwargs, exc, text):
    with pytest.raises(exc, match=text):
        bounds.size_of_S(**kwargs)


# --- the authors' allocation form ----------------------------------------------------
@given(m_values, S_values, Cs, deltas)
def test_m_for_eps_inverts_eps_rand(m, S, C, delta):
    eps = bounds.eps_rand(m, S, C, delta)
    np.testing.assert_allclose(bounds.m_for_eps(eps, S, C, delta), m, rtol=1e-9)


@given(st.floats(1e-3, 50.0), S_values, Cs, deltas)
def test_eps_rand_inverts_m_for_eps(eps, S, C, delta):
    m = bounds.m_for_eps(eps, S, C, delta)
    np.testing.assert_allclose(bounds.eps_rand(m, S, C, delta), eps, rtol=1e-9)


@given(st.integers(1, 10**6), S_values, Cs, deltas)
def test_eps_rand_satisfies_its_defining_equation(m, S, C, delta):
    # eps(m) is the positive root of m eps^2 = a (1/2 + eps/3)
    a = bounds.alpha(C, delta) * S
    eps = bounds.eps_rand(m, S, C, delta)
    np.testing.assert_allclose(m * eps**2, a * (0.5 + eps / 3.0), rtol=1e-10)


def test_alpha_is_the_stated_formula():
    np.testing.assert_allclose(bounds.alpha(3.0, 1e-16), 6.0 * math.log(16.0 / 1e-16), rtol=1e-15)
    np.testing.assert_allclose(bounds.alpha(2.0, 0.1, P=4, k=9), 4.0 * math.log(8 * 5 * 9 / 0.1), rtol=1e-15)


@given(S_values, Cs, deltas)
def test_eps_rand_is_decreasing_and_convex_in_m(S, C, delta):
    m = np.arange(1, 2000)
    e = bounds.eps_rand(m, S, C, delta)
    assert np.all(np.diff(e) < 0)
    assert np.all(np.diff(e, 2) >= -1e-12 * e[:-2])


@given(st.floats(1.0, 1e6), S_values, Cs, deltas)
def test_eps_rand_slope_matches_a_finite_difference(m, S, C, delta):
    h = 1e-4 * m
    fd = (bounds.eps_rand(m + h, S, C, delta) - bounds.eps_rand(m - h, S, C, delta)) / (2 * h)
    np.testing.assert_allclose(bounds.eps_rand_slope(m, S, C, delta), fd, rtol=1e-5)


def test_eps_rand_edge_cases():
    assert bounds.eps_rand(0, 2.0) == math.inf
    assert bounds.eps_rand(10, 0.0) == 0.0
    assert bounds.eps_rand_slope(10, 0.0) == 0.0
    out = bounds.eps_rand(np.array([0, 1, 5]), np.array([1.0, 0.0, 2.0]))
    assert out.shape == (3,) and out[0] == math.inf and out[1] == 0.0 and 0 < out[2] < math.inf


# --- Bernstein guarantees ---------------------------------------------------------
def _bernstein_tail(N, eps, R, n_points, ):
    v, b = max(R - 1.0, 0.0), max(1.0, R - 1.0)
    return n_points * 2.0 * math.exp(-N * eps**2 / (2 * v + 2 * b * eps / 3))


@given(st.floats(1e-3, 5.0), S_values, st.floats(1e-12, 0.5), st.integers(1, 1000))
def test_draws_in_sample_is_the_smallest_count_meeting_bernstein(eps, S, delta, n_points):
    N = bounds.draws_in_sample(eps, S, delta, n_points)
    assert isinstance(N, int) and N >= 1
    assert _bernstein_tail(N, eps, S, n_points) <= delta * (1 + 1e-9)
    assert _bernstein_tail(N - 1, eps, S, n_points) > delta * (1 - 1e-9)


@given(st.integers(1, 10**7), S_values, st.floats(1e-12, 0.5), st.integers(1, 1000))
def test_eps_in_sample_inverts_draws_in_sample(N, S, delta, n_points):
    eps = bounds.eps_in_sample(N, S, delta, n_points)
    # at eps(N) the Bernstein tail equals delta exactly
    np.testing.assert_allclose(_bernstein_tail(N, eps, S, n_points), delta, rtol=1e-7)
    assert bounds.draws_in_sample(eps * (1 + 1e-9), S, delta, n_points) <= N


@given(st.integers(1, 10**6), S_values, st.floats(1e-12, 0.5), Cs)
def test_out_of_sample_is_in_sample_with_C_times_S(N, S, delta, C):
    np.testing.assert_allclose(
        bounds.eps_out_of_sample(N, S, delta, C), bounds.eps_in_sample(N, C * S, delta), rtol=1e-15
    )
    assert bounds.eps_out_of_sample(N, S, delta, C) >= bounds.eps_in_sample(N, S, delta)
    assert bounds.draws_out_of_sample(0.3, S, delta, C) == bounds.draws_in_sample(0.3, C * S, delta)


def test_in_sample_bound_is_monotone_in_N_delta_and_points():
    N = np.arange(1, 5000)
    e = bounds.eps_in_sample(N, 4.0, 0.05, 10)
    assert np.all(np.diff(e) < 0)
    assert bounds.eps_in_sample(100, 4.0, 0.01) > bounds.eps_in_sample(100, 4.0, 0.05)
    assert bounds.eps_in_sample(100, 4.0, 0.05, 20) > bounds.eps_in_sample(100, 4.0, 0.05, 10)


def test_authors_eps_rand_dominates_the_in_sample_bound_at_C_3():
    # with C = 3 the authors' allocation bound is at least the assumption-free one
    m = np.arange(1, 10_000)
    for S in (1.0, 2.5, 40.0):
        assert np.all(bounds.eps_rand(m, S, C=3.0, delta=1e-16) >= bounds.eps_in_sample(m, S, delta=1e-16))


def test_bernstein_edge_cases_and_validation():
    assert bounds.eps_in_sample(0, 2.0, 0.1) == math.inf
    assert bounds.eps_in_sample(10, 0.0, 0.1) == 0.0
    assert bounds.draws_in_sample(0.1, 0.0, 0.1) == 0
    with pytest.raises(ValueError, match="delta"):
        bounds.eps_in_sample(10, 2.0, delta=1.0)
    with pytest.raises(ValueError, match="n_points"):
        bounds.eps_in_sample(10, 2.0, 0.1, n_points=0)
    with pytest.raises(ValueError, match="eps"):
        bounds.draws_in_sample(0.0, 2.0, 0.1)
    with pytest.raises(ValueError, match="C"):
        bounds.eps_out_of_sample(10, 2.0, 0.1, C=0.5)


# --- deterministic ------------------------------------------------------------------
@given(sst.side_sensitivities(sorted_desc=True), Cs)
def test_eps_det_is_C_times_the_pruned_mass_and_monotone(s, C):
    n = s.size
    m = np.arange(n + 1)
    e = bounds.eps_det(s, m, C)
    np.testing.assert_allclose(e, [C * s[k:].sum() for k in m], rtol=1e-12, atol=1e-15)
    assert np.all(np.diff(e) <= 0)
    assert e[-1] == 0.0
    np.testing.assert_allclose(bounds.eps_det_in_sample(s, m), e / C, rtol=1e-12, atol=1e-15)


@given(st.data())
def test_det_relative_error_is_exact_on_S(data):
    n = data.draw(st.integers(1, 12))
    A = data.draw(sst.inputs(n, n_points=(1, 6), signed=False))
    w = data.draw(sst.weight_matrices(1, n))[0]
    sign = data.draw(st.sampled_from([1, -1]))
    idx = ref.side_entries(w, sign)
    if idx.size == 0:
        return
    ws = w[idx]
    As = A[:, idx]
    g = ref.relative_importance(A, w[None, :])[:, 0, idx]
    s = g.max(axis=0)
    m = data.draw(st.integers(0, idx.size))
    kept = np.zeros(idx.size, bool)
    kept[ref.top_m(s, m)] = True
    Z = As @ ws
    Zhat = As @ np.where(kept, ws, 0.0)
    live = Z != 0
    err = bounds.det_relative_error(g, kept)
    np.testing.assert_allclose(((Z - Zhat) / np.where(live, Z, 1.0))[live], err[live], rtol=1e-10, atol=1e-12)
    assert np.all(err <= bounds.eps_det_in_sample(np.sort(s)[::-1], m) * (1 + 1e-12) + 1e-15)


def test_det_relative_error_checks_shapes():
    with pytest.raises(ValueError, match="kept"):
        bounds.det_relative_error(np.ones((2, 3)), np.ones(4, bool))


# --- hybrid rule -------------------------------------------------------------------
@given(sst.side_sensitivities(n=(2, 40), sorted_desc=True), Cs, st.floats(1e-16, 0.5))
def test_hybrid_samples_is_the_rule_of_s9(s, C, delta):
    m = np.arange(0, s.size + 1)
    choice = bounds.hybrid_samples(s, m, C, delta)
    expected = bounds.eps_det(s, m, C) > bounds.eps_rand(m, s.sum(), C, delta)
    np.testing.assert_array_equal(choice, expected)
    assert not choice[-1]  # keeping everything has zero error: never sample
