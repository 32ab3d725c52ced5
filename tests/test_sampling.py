"""Sampling kernels against the NumPy reference (exactly, given the same
uniforms), the draws-for-unique search, and unbiasedness of importance
sampling (docs/theory.md S6, 7, 11)."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sparsify import reference as ref
from sparsify import sampling

DTYPES = [np.float64, np.float32]

# weights on a coarse grid (zeros and repeated values are common), sensitivities
# with exact ties, zeros, and generic values
_w_elems = st.one_of(st.integers(-4, 4).map(lambda v: v / 2), st.floats(-3, 3, allow_subnormal=False))
_s_elems = st.one_of(st.sampled_from([0.0, 0.0, 0.125, 0.25, 0.5, 1.0]),
                     st.floats(1e-6, 1.0, allow_subnormal=False))


# dyadic sensitivities: every partial sum is exact in float32 and float64 alike
_s_dyadic = st.sampled_from([0.0, 0.0, 0.125, 0.25, 0.375, 0.5, 1.0])


@st.composite
def rows_and_scores(draw, dtype, dyadic=False):
    n_out = draw(st.integers(1, 4))
    n_in = draw(st.integers(1, 12))
    W = draw(arrays(np.float64, (n_out, n_in), elements=_w_elems)).astype(dtype)
    s = draw(arrays(np.float64, (n_out, n_in), elements=_s_dyadic if dyadic else _s_elems)).astype(dtype)
    s[W == 0] = 0  # as sensitivity() gives
    return W, s


def _sides(W):
    """All nonempty sides (row, sign, entry indices) of W."""
    out = []
    for i in range(W.shape[0]):
        for sign in (1, -1):
            idx = ref.side_entries(W[i], sign)
            if idx.size:
                out.append((i, sign, idx))
    return out


# --- det: top-m per side ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_det_sides_equals_reference(dtype, data):
    W, s = data.draw(rows_and_scores(dtype))
    sides = _sides(W)
    assume(sides)
    m = np.array([data.draw(st.integers(0, idx.size + 1)) for _, _, idx in sides], np.int64)
    rows = np.array([i for i, _, _ in sides], np.int64)
    signs = np.array([sg for _, sg, _ in sides], np.int64)
    out = np.zeros_like(W)
    sampling.det_sides(W, s, rows, signs, m, out)
    expected = np.zeros_like(W)
    for (i, _, idx), mt in zip(sides, m):
        expected[i, idx] = ref.sparsify_side_det(W[i, idx], s[i, idx], int(mt))
    assert out.dtype == W.dtype
    np.testing.assert_array_equal(out, expected)
    # kept count per side is min(m, nnz), and kept weights are unchanged
    for (i, _, idx), mt in zip(sides, m):
        assert np.count_nonzero(out[i, idx]) == min(int(mt), idx.size)


def test_reference_top_m_breaks_ties_to_the_lower_index():
    s = np.array([0.5, 1.0, 0.5, 0.5, 1.0, 0.0])
    np.testing.assert_array_equal(ref.top_m(s, 1), [1])
    np.testing.assert_array_equal(ref.top_m(s, 2), [1, 4])
    np.testing.assert_array_equal(ref.top_m(s, 3), [0, 1, 4])
    np.testing.assert_array_equal(ref.top_m(s, 4), [0, 1, 2, 4])
    np.testing.assert_array_equal(ref.top_m(s, 6), [0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("dtype", DTYPES)
def test_det_sides_tie_rule_on_a_hand_example(dtype):
    W = np.array([[1.0, 2.0, -1.0, 3.0, 4.0, -2.0, 5.0]], dtype)
    s = np.array([[0.5, 0.2, 0.7, 0.5, 0.5, 0.7, 0.9]], dtype)
    out = np.zeros_like(W)
    sampling.det_sides(W, s, np.array([0, 0]), np.array([1, -1]), np.array([3, 1]), out)
    # positive side: 0.9 (j=6), then the 0.5 ties at j=0 and j=3 (not j=4); negative side: j=2
    np.testing.assert_array_equal(out, np.array([[1.0, 0.0, -1.0, 3.0, 0.0, 0.0, 5.0]], dtype))


# --- rand: importance sampling per side ------------------------------------------------------
_u_elems = st.one_of(st.sampled_from([0.0, 0.5, 1.0 - 2.0**-53, 1.0 - 2.0**-24]),
                     st.floats(0.0, 1.0, exclude_max=True))


@pytest.mark.parametrize("dtype, dyadic", [(np.float64, False), (np.float32, False), (np.float32, True)])
@given(data=st.data())
def test_rand_sides_equals_reference(dtype, dyadic, data):
    W, s = data.draw(rows_and_scores(dtype, dyadic))
    sides = [(i, sg, idx) for i, sg, idx in _sides(W) if np.any(s[i, idx] > 0)]
    assume(sides)
    draws = np.array([data.draw(st.integers(1, 15)) for _ in sides], np.int64)
    u = data.draw(arrays(np.float64, int(draws.sum()), elements=_u_elems))
    rows = np.array([i for i, _, _ in sides], np.int64)
    signs = np.array([sg for _, sg, _ in sides], np.int64)
    out = np.zeros_like(W)
    kept = sampling.rand_sides(W, s, rows, signs, draws, u, out)
    expected = np.zeros_like(W)
    expected_kept = []
    start = 0
    for (i, _, idx), N in zip(sides, draws):
        u_side = u[start:start + N]
        start += N
        expected[i, idx] = ref.sparsify_side_rand(W[i, idx], s[i, idx], u_side)
        counts = ref.sample_counts(s[i, idx], u_side)
        assert counts.sum() == N
        assert np.all(counts[s[i, idx] == 0] == 0)  # zero-sensitivity entries are never drawn
        expected_kept.append(np.count_nonzero(counts))
    assert out.dtype == W.dtype
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(kept, expected_kept)
    # support and signs: only side entries are written, each with its original sign
    written = out != 0
    assert np.all(W[written] != 0)
    assert np.all(np.sign(out[written]) == np.sign(W[written]))


def test_rand_sides_equals_reference_for_generic_float32_sensitivities():
    W = np.array([[0.0, 0.5, 0.5, 1.0]], np.float32)
    s = np.array([[0.0, 0.38494664, 0.38494664, 0.38494664]], np.float32)
    u = np.array([0.0])
    out = np.zeros_like(W)
    sampling.rand_sides(W, s, np.array([0]), np.array([1]), np.array([1]), u, out)
    expected = np.zeros_like(W)
    expected[0, 1:] = ref.sparsify_side_rand(W[0, 1:], s[0, 1:], u)
    np.testing.assert_array_equal(out, expected)


def test_sample_counts_is_inverse_cdf_on_a_hand_example():
    s = np.array([0.25, 0.0, 0.5, 0.25])   # cumulative 0.25, 0.25, 0.75, 1.0
    u = np.array([0.0, 0.2499, 0.25, 0.74, 0.75, 0.99, 1.0 - 2.0**-53])
    np.testing.assert_array_equal(ref.sample_counts(s, u), [2, 0, 2, 3])


def test_recovered_counts_make_the_estimator_unbiased():
    """E[w_hat_j] = w_j from the draw probabilities: w_hat_j = w_j c_j / (N q_j) with
    E[c_j] = N q_j. Recover c_j from the kernel's output, check it is a
    nonnegative integer summing to N, and that w_hat_j / c_j * N q_j = w_j."""
    rng = np.random.default_rng(0)
    n, N = 9, 7
    w = rng.uniform(0.2, 2.0, n)
    s = rng.uniform(0.05, 1.0, n)
    q = s / np.cumsum(s)[-1]
    R = 200
    W, S = np.tile(w, (R, 1)), np.tile(s, (R, 1))
    out = np.zeros_like(W)
    sampling.rand_sides(W, S, np.arange(R), np.ones(R, np.int64), np.full(R, N), rng.random(R * N), out)
    c = out * N * q / w
    np.testing.assert_allclose(c, np.round(c), rtol=0, atol=1e-9)
    c = np.round(c)
    np.testing.assert_array_equal(c.sum(axis=1), np.full(R, N))
    hit = c > 0
    np.testing.assert_allclose((out / np.where(hit, c, 1) * N * q)[hit], W[hit], rtol=1e-13, atol=0)


def test_monte_carlo_unbiasedness_of_a_sides_preactivation():
    """Many independent realisations of one side (R copies of the same row, one
    kernel call) at a fixed seed. Z_hat(x) = sum_j w_hat_j x_j is unbiased, so its
    sample mean lies within a few standard errors of Z(x); 4.5 SE fails with
    probability below 1e-5 for a correct sampler (normal approximation, R large),
    and the seed is fixed so the test is deterministic. The sample variance must
    match the exact variance (sum_j (w_j x_j)^2 / q_j - Z^2) / N within 10%
    (its relative standard error here is about 1-2%)."""
    rng = np.random.default_rng(12345)
    n, N, R = 15, 6, 40_000
    w = -rng.uniform(0.1, 2.0, n)                     # a negative side
    x = rng.uniform(0.0, 1.5, n)
    x[3] = 0.0
    s = np.abs(w) * rng.uniform(0.2, 1.0, n)
    q = s / s.sum()
    W = np.tile(w, (R, 1))
    out = np.zeros_like(W)
    sampling.rand_sides(W, np.tile(s, (R, 1)), np.arange(R), -np.ones(R, np.int64), np.full(R, N),
                        rng.random(R * N), out)
    z_hat = out @ x
    Z = w @ x
    se = z_hat.std(ddof=1) / np.sqrt(R)
    assert abs(z_hat.mean() - Z) <= 4.5 * se, (z_hat.mean(), Z, se)
    var_exact = (np.sum((w * x) ** 2 / q) - Z**2) / N
    np.testing.assert_allclose(z_hat.var(ddof=1), var_exact, rtol=0.1, atol=0)
    # per weight: E[w_hat_j] = w_j (same argument, per coordinate, all within 4.5 SE)
    se_j = out.std(axis=0, ddof=1) / np.sqrt(R)
    assert np.all(np.abs(out.mean(axis=0) - w) <= 4.5 * se_j)


# --- draws for a target of distinct weights -------------------------------------------------
@st.composite
def probabilities(draw):
    n = draw(st.integers(1, 30))
    raw = draw(arrays(np.float64, n, elements=st.one_of(
        st.sampled_from([1.0, 1.0, 0.5, 1e-3]), st.floats(1e-6, 1.0, allow_subnormal=False))))
    return raw / raw.sum()


def _E(q, N):
    return ref.expected_unique(q, N)


#: relative rounding allowed between the kernel's E[unique] (log1p/expm1) and the
#: reference's (powers): about 1e-11 was seen for N ~ 2e7 draws on a side with
#: q entries of 5e-8, so both checks below use one tolerance well above that
_E_RTOL = 1e-9


@given(q=probabilities(), frac=st.floats(0.001, 0.999))
def test_draws_for_unique_agrees_with_reference_and_is_minimal(q, frac):
    assume(q.size >= 2)
    m = max(frac * q.size, 1e-3)
    assume(m < q.size)
    N = int(sampling.draws_for_unique([q], np.array([m]))[0])
    N_ref = ref.draws_for_unique(q, m)
    if N != N_ref:
        # the two compute E[unique] with different but equivalent formulas
        # (log1p/expm1 vs powers); they may only disagree where E at the
        # boundary is within rounding of m
        boundary = min(N, N_ref)
        assert abs(_E(q, boundary) - m) <= _E_RTOL * max(m, 1.0), (N, N_ref, _E(q, boundary), m)
        assert abs(N - N_ref) == 1
    # minimal: E(N) >= m > E(N - 1), up to the same rounding
    assert N >= 1
    assert _E(q, N) >= m * (1 - _E_RTOL)
    assert _E(q, N - 1) < m * (1 + _E_RTOL)


def test_draws_for_unique_many_sides_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(3)
    qs = [rng.dirichlet(np.full(n, a)) for n, a in [(5, 1.0), (40, 0.2), (2, 5.0), (17, 1.0), (100, 0.05)]]
    m = np.array([2.5, 10.0, 1.0, 16.0, 3.0])
    together = sampling.draws_for_unique(qs, m)
    alone = [int(sampling.draws_for_unique([q], np.array([mm]))[0]) for q, mm in zip(qs, m)]
    np.testing.assert_array_equal(together, alone)
    assert together.dtype == np.int64


@given(q=probabilities(), m=st.floats(1e-6, 1.0))
@settings(max_examples=60)
def test_a_target_of_at_most_one_needs_exactly_one_draw(q, m):
    # one draw hits exactly one entry; the computed sum of q may round below 1 and must not
    # turn into a second draw (that made the draw count depend on the machine's libm)
    assume(q.size >= 2)
    assert int(sampling.draws_for_unique([q], np.array([m]))[0]) == 1
    assert ref.draws_for_unique(q, m) == 1


def test_one_draw_where_the_computed_sum_of_q_falls_short_of_one():
    s = np.random.default_rng(2).random(8)
    q = s / s.sum()
    assert sampling.expected_unique([q], np.array([1]))[0] < 1.0  # the case that asked for 2 draws
    assert int(sampling.draws_for_unique([q], np.array([1.0]))[0]) == 1


@pytest.mark.parametrize("n", [1, 2, 7, 50, 1000])
def test_expected_unique_closed_form_for_uniform_q(n):
    q = np.full(n, 1.0 / n)
    for N in [0, 1, 2, 5, 50, 3000]:
        np.testing.assert_allclose(_E(q, N), n * (1 - (1 - 1 / n) ** N), rtol=1e-12, atol=1e-12)


def test_draws_for_uniform_q_match_the_inverted_closed_form():
    n = 20
    q = np.full(n, 1.0 / n)
    for m in [1.0, 1.5, 5.0, 10.0, 19.0, 19.9]:
        # N = ceil(log(1 - m/n) / log(1 - 1/n)), the inverse of the closed form
        N_closed = int(np.ceil(np.log1p(-m / n) / np.log1p(-1 / n) - 1e-9))
        assert int(sampling.draws_for_unique([q], np.array([m]))[0]) == N_closed
        assert ref.draws_for_unique(q, m) == N_closed


@given(q=probabilities())
def test_expected_unique_is_monotone_in_N(q):
    E = np.array([_E(q, N) for N in range(0, 60)])
    assert E[0] == 0.0
    np.testing.assert_allclose(E[1], 1.0, rtol=1e-12, atol=0)  # one draw, one distinct weight
    assert np.all(np.diff(E) >= -1e-12)
    assert np.all(E <= q.size * (1 + 1e-12))


def test_draws_for_unique_refuses_impossible_targets():
    q = np.array([0.5, 0.25, 0.25])
    for m in [0.0, -1.0, 3.0, 4.0]:
        with pytest.raises(ValueError, match="m"):
            sampling.draws_for_unique([q], np.array([m]))
    assert sampling.draws_for_unique([], np.zeros(0)).size == 0
    assert ref.draws_for_unique(q, 0) == 0
    with pytest.raises(ValueError):
        ref.draws_for_unique(q, 3.5)


@given(arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1)),
       st.data())
def test_quickselect_equals_partition(values, data):
    """The selection inside _det_sides: the k-th smallest value, ties and repeats included."""
    from sparsify.sampling import _kth_smallest

    k = data.draw(st.integers(0, values.size - 1))
    scratch = values.copy()
    assert _kth_smallest(scratch, values.size, k) == np.partition(values, k)[k]
    np.testing.assert_array_equal(np.sort(scratch), np.sort(values))  # reordered, nothing lost
