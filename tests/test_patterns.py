"""N:M semi-structured selection: exact structure, top-N with ties to the lower index, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsify as sp
from sparsify import patterns as P
from sparsify.baselines import prune_baseline
from sparsify.bounds import DEFAULT_C


def test_parse_pattern():
    assert P.parse_pattern("2:4") == (2, 4)
    assert P.parse_pattern(" 4 : 8 ") == (4, 8)
    assert P.parse_pattern((1, 2)) == (1, 2)
    for bad in ["4:4", "5:4", "0:4", "2:1"]:
        with pytest.raises(ValueError, match="1 <= N < M"):
            P.parse_pattern(bad)
    with pytest.raises(ValueError, match="expected 'N:M'"):
        P.parse_pattern("2/4")
    with pytest.raises(TypeError, match="pattern"):
        P.parse_pattern(0.5)


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), nm=st.sampled_from([(1, 2), (2, 4), (3, 4), (4, 8), (1, 3)]),
       rows=st.integers(1, 5), groups=st.integers(1, 4), ties=st.booleans())
def test_nm_mask_keeps_exactly_the_top_n_of_each_group(seed, nm, rows, groups, ties):
    n, m = nm
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, size=(rows, groups * m)).astype(float) if ties else rng.random((rows, groups * m))
    mask = P.nm_mask(s, n, m)
    for i in range(rows):                                 # the rule, one group at a time
        for g in range(groups):
            block = s[i, g * m:(g + 1) * m]
            kept = np.flatnonzero(mask[i, g * m:(g + 1) * m])
            assert kept.size == n
            expected = sorted(range(m), key=lambda j: (-block[j], j))[:n]   # ties to the lower index
            assert sorted(expected) == list(kept)


def test_ineligible_entries_are_never_kept():
    s = np.array([[5.0, 4.0, 3.0, 2.0]])
    mask = P.nm_mask(s, 2, 4, eligible=np.array([[False, True, False, False]]))
    np.testing.assert_array_equal(mask, [[False, True, False, False]])


def test_pattern_must_divide_each_row_and_names_the_layer():
    net = sp.random_mlp([8, 6, 3], rng=0)
    X = np.random.default_rng(0).standard_normal((10, 8))
    with pytest.raises(ValueError, match="layer 1 .*rows of 6 inputs"):
        sp.prune(net, X, method="det", pattern="2:4")
    with pytest.raises(ValueError, match="layer 1"):
        prune_baseline(net, X, method="magnitude-global", pattern="2:4")
    with pytest.raises(ValueError, match="1 <= N < M"):
        sp.prune(net, X, method="det", pattern="4:4")


@pytest.fixture(scope="module")
def net_X():
    net = sp.random_mlp([8, 12, 4], rng=2)
    return net, np.random.default_rng(3).standard_normal((20, 8))


def test_sipp_det_with_pattern_keeps_top_n_sensitivities_and_states_the_det_bound(net_X):
    net, X = net_X
    res = sp.prune(net, X, method="det", pattern="2:4")
    for k, (m, s, W) in enumerate(zip(res.masks, res.sensitivities, net.weights)):
        groups = m.reshape(m.shape[0], -1, 4)
        assert np.all(groups.sum(axis=2) == 2)
        np.testing.assert_array_equal(m, P.nm_mask(s, 2, 4))
        # the bound is C times the sensitivity mass dropped on each side (docs/theory.md S6)
        tab = res.sides[k]
        for side, sign in ((0, W > 0), (1, W < 0)):
            dropped = np.where(sign & ~m, s, 0).sum(axis=1)
            full = tab.kept[:, side] >= tab.nnz[:, side]
            np.testing.assert_allclose(tab.eps_det[:, side], np.where(full, 0.0, DEFAULT_C * dropped), rtol=1e-12)
    assert res.report.allocation == "pattern 2:4" and res.report.achieved == net.n_weights // 2


def test_pattern_with_sampling_or_a_budget_is_refused(net_X):
    net, X = net_X
    with pytest.raises(ValueError, match="method='det'"):
        sp.prune(net, X, method="hybrid", pattern="2:4")
    with pytest.raises(ValueError, match="fixes the kept fraction"):
        sp.prune(net, X, keep=0.5, method="det", pattern="2:4")


@pytest.mark.parametrize("method", ["magnitude-global", "wanda", "random"])
def test_baselines_with_pattern_keep_top_n_scores(net_X, method):
    net, X = net_X
    res = prune_baseline(net, X, method=method, pattern="1:4", rng=0)
    for m in res.masks:
        assert np.all(m.reshape(m.shape[0], -1, 4).sum(axis=2) == 1)
    if method == "magnitude-global":
        for m, W in zip(res.masks, net.weights):
            np.testing.assert_array_equal(m, P.nm_mask(np.abs(W), 1, 4))
