"""Budget allocation (docs/theory.md S10): the balanced program's integer
targets, its KKT conditions and a scipy cross-check, the cubic behind it,
global top-B, and the authors' measured behaviour on a 64-300-100-10 MLP."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import minimize

import sparsify as sp
from sparsify import bounds, reference
from sparsify.allocation import _balanced_m, balanced_targets, global_top_b, side_stats, stationary_eps

C, DELTA = bounds.DEFAULT_C, bounds.DEFAULT_DELTA


@st.composite
def side_problems(draw, min_sides=1, max_sides=30):
    n = draw(st.integers(min_sides, max_sides))
    nnz = draw(arrays(np.int64, n, elements=st.integers(0, 25)))
    mass = draw(arrays(np.float64, n, elements=st.one_of(
        st.just(0.0), st.floats(1.0, 30.0, allow_subnormal=False))))
    mass[nnz == 0] = 0.0  # a side without weights has no sensitivity mass
    inv_eta = draw(arrays(np.float64, n, elements=st.sampled_from([1.0, 0.5, 0.1, 1 / 300])))
    return mass, nnz, inv_eta


# --- balanced_targets: integer targets ------------------------------------------------
@given(problem=side_problems(), data=st.data())
def test_balanced_targets_sum_to_the_budget_within_capacity(problem, data):
    mass, nnz, inv_eta = problem
    assume(nnz.sum() > 0)
    budget = data.draw(st.integers(1, int(nnz.sum()) + 5))
    m = balanced_targets(mass, nnz, inv_eta, budget, C, DELTA)
    assert m.dtype.kind == "i"
    assert int(m.sum()) == min(budget, int(nnz.sum()))
    assert np.all(m >= 0) and np.all(m <= nnz)
    live = (mass > 0) & (nnz > 0)
    dead = (mass == 0) & (nnz > 0)
    if np.any(m[dead] > 0):
        # dead sides get budget only once every live side is full ...
        np.testing.assert_array_equal(m[live], nnz[live])
        # ... and then in index order: only the last dead side that got any may be partial
        dead_idx = np.flatnonzero(dead)
        last = np.flatnonzero(dead & (m > 0))[-1]
        before = dead_idx[dead_idx < last]
        np.testing.assert_array_equal(m[before], nnz[before])
    if budget <= nnz[live].sum():
        assert np.all(m[dead] == 0)


def _live_problem(seed, n_sides):
    rng = np.random.default_rng(seed)
    nnz = rng.integers(1, 40, n_sides)
    mass = rng.uniform(1.0, 15.0, n_sides)
    inv_eta = rng.choice([1.0, 1 / 3, 1 / 50], n_sides)
    return mass, nnz, inv_eta


@pytest.mark.parametrize("seed", range(6))
def test_balanced_solution_satisfies_kkt(seed):
    """At the continuous optimum, every side strictly between 0 and its cap has
    (1/eta) |eps'(m)| = lambda; a side at its cap would still like more
    ((1/eta) |eps'(cap)| >= lambda); and the budget is used."""
    mass, nnz, inv_eta = _live_problem(seed, 12)
    budget = int(0.4 * nnz.sum())
    m, lam = balanced_targets(mass, nnz, inv_eta, budget, C, DELTA, return_lambda=True)
    assert np.isfinite(lam) and lam > 0
    a = bounds.alpha(C, DELTA) * mass
    m_cont = _balanced_m(lam, a, inv_eta, nnz.astype(np.float64))
    marginal = inv_eta * np.abs(bounds.eps_rand_slope(m_cont, mass, C, DELTA))
    inner = (m_cont > 0) & (m_cont < nnz)
    assert inner.any()
    np.testing.assert_allclose(marginal[inner], lam, rtol=1e-6, atol=0)
    capped = m_cont >= nnz
    assert np.all(marginal[capped] >= lam * (1 - 1e-6))
    assert m_cont.sum() <= budget * (1 + 1e-12)
    np.testing.assert_allclose(m_cont.sum(), budget, rtol=1e-6, atol=0)
    # integer targets round the continuous optimum (down, or up by one)
    assert np.all(m >= np.floor(m_cont * (1 - 1e-12))) and np.all(m <= np.floor(m_cont) + 1)


def _objective(m, mass, inv_eta):
    return float(np.sum(inv_eta * bounds.eps_rand(m, mass, C, DELTA)))


@pytest.mark.parametrize("seed, n_sides", [(0, 5), (1, 7), (2, 10), (3, 8)])
def test_balanced_solution_matches_scipy(seed, n_sides):
    mass, nnz, inv_eta = _live_problem(seed, n_sides)
    budget = int(0.3 * nnz.sum())
    _, lam = balanced_targets(mass, nnz, inv_eta, budget, C, DELTA, return_lambda=True)
    ours = _balanced_m(lam, bounds.alpha(C, DELTA) * mass, inv_eta, nnz.astype(np.float64))
    cap = nnz.astype(np.float64)
    x0 = budget * cap / cap.sum()
    sol = minimize(
        lambda m: _objective(m, mass, inv_eta), x0,
        jac=lambda m: inv_eta * bounds.eps_rand_slope(m, mass, C, DELTA),
        method="SLSQP", bounds=[(1e-6, c) for c in cap],
        constraints=[{"type": "ineq", "fun": lambda m: budget - m.sum(), "jac": lambda m: -np.ones_like(m)}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    # SLSQP may stop with "positive directional derivative" when it already sits at
    # the optimum; what matters is a feasible point and its objective value
    assert sol.x.sum() <= budget * (1 + 1e-9) and np.all(sol.x <= cap * (1 + 1e-9)), sol
    f_ours, f_scipy = _objective(ours, mass, inv_eta), _objective(sol.x, mass, inv_eta)
    # ours is the exact optimum: never worse than scipy's, and scipy gets close to it
    assert f_ours <= f_scipy * (1 + 1e-9)
    np.testing.assert_allclose(f_ours, f_scipy, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ours, sol.x, rtol=1e-3, atol=1e-3 * cap.max())


def test_balanced_targets_with_full_budget_keep_everything():
    mass, nnz, inv_eta = _live_problem(0, 9)
    mass[2] = 0.0   # one dead side
    m, lam = balanced_targets(mass, nnz, inv_eta, int(nnz.sum()), C, DELTA, return_lambda=True)
    np.testing.assert_array_equal(m, nnz)
    assert np.isnan(lam)  # no multiplier: the constraint is not binding


def test_larger_sensitivity_mass_gets_a_larger_target():
    nnz = np.full(4, 100)
    mass = np.array([1.0, 2.0, 4.0, 8.0])
    m = balanced_targets(mass, nnz, np.ones(4), 60, C, DELTA)
    assert np.all(np.diff(m) >= 0) and m[-1] > m[0]


# --- the cubic -----------------------------------------------------------------------------
def test_stationary_eps_solves_the_cubic_across_scales():
    # both branches of the closed form: c = 4.5 sqrt(3/t) >= 1 iff t <= 60.75
    t = np.concatenate([np.logspace(-8, 8, 401), [60.75, 60.75 * (1 - 1e-12), 60.75 * (1 + 1e-12)]])
    eps = stationary_eps(t)
    assert np.all(np.isfinite(eps)) and np.all(eps > 0)
    residual = eps**3 - t * eps - 3 * t
    scale = eps**3 + t * eps + 3 * t
    np.testing.assert_array_less(np.abs(residual), 1e-12 * scale)
    order = np.argsort(t)
    assert np.all(np.diff(eps[order]) >= 0)  # the root grows with t
    # the stationarity form used by the allocation: eps^3 / (eps + 3) = t
    np.testing.assert_allclose(eps**3 / (eps + 3), t, rtol=1e-11, atol=0)


def test_stationary_eps_is_the_largest_real_root():
    for t in [1e-3, 1.0, 60.0, 61.5, 1e4]:
        roots = np.roots([1.0, 0.0, -t, -3 * t])
        real = roots[np.abs(roots.imag) < 1e-9].real
        np.testing.assert_allclose(stationary_eps(np.array([t]))[0], real.max(), rtol=1e-9, atol=0)


# --- global top-B ---------------------------------------------------------------------------
@st.composite
def score_sets(draw):
    n_layers = draw(st.integers(1, 3))
    scores, eligible, demoted = [], [], []
    for _ in range(n_layers):
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 5)))
        scores.append(draw(arrays(np.float64, shape, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))))
        eligible.append(draw(arrays(bool, shape)))
        demoted.append(draw(arrays(bool, shape)))
    return scores, eligible, demoted


@given(sets=score_sets(), data=st.data())
def test_global_top_b_against_a_plain_sort(sets, data):
    scores, eligible, demoted = sets
    total = sum(s.size for s in scores)
    budget = data.draw(st.integers(0, total + 2))
    masks = global_top_b(scores, budget, eligible, demoted)
    # independent rule: eligible entries ordered by (demoted last, higher score, lower layer, lower index)
    entries = sorted(
        (int(d.ravel()[j]), -float(s.ravel()[j]), k, j)
        for k, (s, e, d) in enumerate(zip(scores, eligible, demoted))
        for j in range(s.size) if e.ravel()[j]
    )
    expected = [np.zeros(s.shape, bool) for s in scores]
    for _, _, k, j in entries[:budget]:
        expected[k].ravel()[j] = True
    for got, want, e in zip(masks, expected, eligible):
        assert got.shape == want.shape and got.dtype == bool
        np.testing.assert_array_equal(got, want)
        assert not np.any(got & ~e)  # ineligible entries are never kept
    assert sum(int(mk.sum()) for mk in masks) == min(budget, len(entries))


def test_global_top_b_ties_go_to_the_lower_layer_and_index():
    scores = [np.array([[0.5, 0.9], [0.5, 0.1]]), np.array([[0.9, 0.5]])]
    masks = global_top_b(scores, 3)
    np.testing.assert_array_equal(masks[0], [[True, True], [False, False]])
    np.testing.assert_array_equal(masks[1], [[True, False]])
    masks = global_top_b(scores, 4)
    np.testing.assert_array_equal(masks[0], [[True, True], [True, False]])
    np.testing.assert_array_equal(masks[1], [[True, False]])


def test_global_top_b_defaults_keep_exactly_b():
    rng = np.random.default_rng(0)
    scores = [rng.random((3, 4)), rng.random(5)]
    for b in range(0, 18):
        assert sum(int(m.sum()) for m in global_top_b(scores, b)) == min(b, 17)


def test_side_stats_counts_and_masses():
    W = np.array([[1.0, -2.0, 0.0, 3.0], [0.0, 0.0, -1.0, -1.0]])
    s = np.array([[0.25, 1.0, 0.0, 0.5], [0.0, 0.0, 0.5, 0.75]])
    nnz, mass = side_stats(W, s)
    np.testing.assert_array_equal(nnz, [[2, 1], [0, 2]])
    np.testing.assert_array_equal(mass, [[0.75, 1.0], [0.0, 1.25]])


# --- the authors' behaviour on a 64-300-100-10 ReLU MLP ------------------------------------------
@pytest.fixture(scope="module")
def digits_like():
    rng = np.random.default_rng(0)
    net = sp.random_mlp([64, 300, 100, 10], rng=rng)
    n_points = int(np.ceil(3 * np.log(8 * 410 * 300 / DELTA)))
    assert n_points == 152
    return net, rng.standard_normal((n_points, 64))


def test_det_global_gives_nearly_all_the_budget_to_the_first_layer(digits_like):
    net, X = digits_like
    res = sp.prune(net, X, keep=0.1, method="det", rng=0)
    assert res.report.allocation == "global"
    kept = [row["kept"] for row in res.report.layers]
    assert res.report.achieved == res.report.requested == 5020
    # measured: [5007, 0, 13] -- narrow fan-in and the input sign split win the global ranking
    assert kept[0] >= 0.95 * res.report.requested
    assert kept[1] <= 0.01 * net.layers[1].weight.size
    # the first layer's live sides carry more sensitivity per weight than the second layer's
    assert np.mean(res.sensitivities[0][net.layers[0].weight != 0]) > \
        3 * np.mean(res.sensitivities[1][net.layers[1].weight != 0])


def test_det_balanced_spreads_the_budget_over_all_layers(digits_like):
    net, X = digits_like
    res = sp.prune(net, X, keep=0.1, method="det", allocation="balanced", rng=0)
    kept = [row["kept"] for row in res.report.layers]
    assert res.report.achieved == 5020
    assert all(k > 0 for k in kept)
    assert kept[0] < 0.8 * 5020


@pytest.mark.parametrize("allocation", ["global", "balanced"])
def test_hybrid_with_the_authors_constants_never_samples(digits_like, allocation):
    """With delta = 1e-16 and C = 3 hybrid chooses top-m on every side, so it equals det bit for bit."""
    net, X = digits_like
    hyb = sp.prune(net, X, keep=0.1, method="hybrid", allocation=allocation, rng=0)
    det = sp.prune(net, X, keep=0.1, method="det", allocation=allocation, rng=1)
    assert hyb.report.sampled_sides == 0
    assert all(not t.sampled.any() for t in hyb.sides)
    for a, b in zip(hyb.network.weights, det.network.weights):
        assert a.tobytes() == b.tobytes()


def test_hybrid_samples_with_a_loose_delta_and_C_one(digits_like):
    net, X = digits_like
    res = sp.prune(net, X, keep=0.1, method="hybrid", rng=0, delta=0.5, C=1.0)
    assert 0 < res.report.sampled_sides < sum(int((t.nnz > 0).sum()) for t in res.sides)
    # C < 1 contradicts g <= s on S itself and is refused
    with pytest.raises(ValueError, match="C"):
        sp.prune(net, X, keep=0.1, method="hybrid", rng=0, delta=0.5, C=0.1)


# --- fast twins of the readable NumPy expressions -------------------------------------------
@given(problem=side_problems(), log_lam=st.floats(-30.0, 30.0))
def test_balanced_m_kernel_equals_the_numpy_formula(problem, log_lam):
    from sparsify.allocation import _balanced_m_fast

    mass, nnz, inv_eta = problem
    a = bounds.alpha(C, DELTA) * mass
    cap = nnz.astype(np.float64)
    want = _balanced_m(np.exp(log_lam), a, inv_eta, cap)
    got = np.empty_like(a)
    total = _balanced_m_fast(np.exp(log_lam), a, 3.0 * inv_eta, cap, got)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert total == pytest.approx(want.sum(), rel=1e-12, abs=0)


@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**32 - 1), st.sampled_from([np.float64, np.float32]))
def test_side_sums_equals_the_numpy_expression(n_out, n_in, seed, dtype):
    from sparsify.allocation import side_sums

    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((n_out, n_in)) * (rng.random((n_out, n_in)) < 0.7)).astype(dtype)
    W[rng.random(W.shape) < 0.1] = -0.0
    values = rng.random((n_out, n_in)).astype(dtype)
    mask = rng.random((n_out, n_in)) < 0.5
    for v in (values, mask):
        want = np.stack([np.where(W > 0, v, 0).sum(axis=1, dtype=np.float64),
                         np.where(W < 0, v, 0).sum(axis=1, dtype=np.float64)], axis=1)
        got = side_sums(W, v)
        if v.dtype == bool:
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want.astype(np.int64))
        else:
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


# --- readable twins in sparsify.reference agree with the fast paths ------------------------
@st.composite
def scored_layers(draw):
    """1-3 layers of scores with many ties (few distinct values), eligibility and demotion."""
    shapes = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 5)), min_size=1, max_size=3))
    values = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1e-30, 2e-30, -3.0]), st.floats(-1e3, 1e3))
    scores = [draw(arrays(np.float64, sh, elements=values)) for sh in shapes]
    eligible = [draw(arrays(np.bool_, sh)) for sh in shapes]
    demoted = [draw(arrays(np.bool_, sh)) for sh in shapes]
    return scores, eligible, demoted


@settings(max_examples=60, deadline=None)
@given(problem=scored_layers(), data=st.data())
def test_global_top_b_equals_its_plain_sort_twin(problem, data):
    scores, eligible, demoted = problem
    n = sum(s.size for s in scores)
    budget = data.draw(st.integers(0, n + 2))
    for elig, dem in ((None, None), (eligible, None), (eligible, demoted)):
        fast = global_top_b(scores, budget, elig, dem)
        plain = reference.global_top_b(scores, budget, elig, dem)
        for a, b in zip(fast, plain):
            np.testing.assert_array_equal(a, b)


def _objective(m, mass, inv_eta):
    return float(np.sum(inv_eta * bounds.eps_rand(np.maximum(m, 1e-300), mass, C, DELTA) * (m > 0)))


@settings(max_examples=30, deadline=None)
@given(problem=side_problems(max_sides=10), data=st.data())
def test_balanced_targets_agree_with_the_plain_bisection_twin(problem, data):
    mass, nnz, inv_eta = problem
    assume(nnz.sum() > 0)
    budget = data.draw(st.integers(1, int(nnz.sum()) + 3))
    fast = balanced_targets(mass, nnz, inv_eta, budget, C, DELTA)
    plain = reference.balanced_targets(mass, nnz, inv_eta, budget, C, DELTA)
    assert int(fast.sum()) == int(plain.sum()) == min(budget, int(nnz.sum()))
    # the same program and rounding rule: equal up to one unit where two fractional parts
    # are equal to the bisection's tolerance, and the same objective
    assert np.max(np.abs(fast - plain)) <= 1
    live = (mass > 0) & (nnz > 0)
    if np.all(fast[live] > 0) and np.all(plain[live] > 0):
        np.testing.assert_allclose(_objective(fast, mass, inv_eta), _objective(plain, mass, inv_eta), rtol=1e-6)
