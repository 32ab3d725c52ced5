"""sparsify.steps: each helper against what sparsify.prune does internally."""
from __future__ import annotations

import numpy as np
import pytest

import sparsify as sp
from sparsify import reference, steps
from sparsify.allocation import DEFAULT_ALLOCATION
from sparsify.testing import golden


@pytest.fixture(scope="module")
def case():
    data = golden.load("conv-float64")
    return golden.network("conv-float64", data), data["X_S"]


@pytest.mark.parametrize("method", ["det", "rand", "hybrid"])
def test_helpers_rebuild_prune_bit_for_bit(case, method):
    net, X = case
    res = sp.prune(net, X, keep=0.3, method=method, rng=7, patch_reduction="max")
    budget = res.report.requested
    allocation = DEFAULT_ALLOCATION[method]
    targets = steps.side_targets(net, res.sensitivities, budget, allocation)
    for t, tab in zip(targets, res.sides):
        np.testing.assert_array_equal(t, tab.target)
    weights, tables = steps.prune_given_sensitivities(net, res.sensitivities, budget, method, rng=7)
    for w, layer, tab, t2 in zip(weights, res.network.prunable_layers, res.sides, tables):
        np.testing.assert_array_equal(w, layer.weight)
        np.testing.assert_array_equal(t2.draws, tab.draws)
    # the sampled sides, rebuilt from side_arrays and uniform_stream with the readable reference
    stream = steps.uniform_stream(7, [tab.draws for tab in res.sides])
    assert (len(stream) > 0) if method == "rand" else (method != "det" or not stream)
    for (k, i, sign), u in stream.items():
        layer = net.prunable_layers[k]
        idx, w, s = steps.side_arrays(layer.weight, res.sensitivities[k], i, sign)
        assert u.size == res.sides[k].draws[i, 0 if sign > 0 else 1]
        got = res.network.prunable_layers[k].weight_matrix[i, idx]
        np.testing.assert_array_equal(got, reference.sparsify_side_rand(w, s, u))


def test_side_arrays_follow_the_side_convention():
    W = np.array([[0.5, -1.0, 0.0, 2.0]])
    s = np.array([[0.1, 0.2, 0.0, 0.7]])
    idx, w, sv = steps.side_arrays(W, s, 0, 1)
    assert idx.tolist() == [0, 3] and w.tolist() == [0.5, 2.0] and sv.tolist() == [0.1, 0.7]
    idx, w, sv = steps.side_arrays(W, s, 0, -1)
    assert idx.tolist() == [1] and w.tolist() == [-1.0] and sv.tolist() == [0.2]
    with pytest.raises(ValueError, match="sign"):
        steps.side_arrays(W, s, 0, 0)
    with pytest.raises(ValueError, match="i "):
        steps.side_arrays(W, s, 1, 1)


def test_uniform_stream_is_the_generator_cut_in_side_order():
    draws = [np.array([[2, 0], [0, 3]]), np.array([[1, 0]])]
    stream = steps.uniform_stream(np.random.default_rng(3), draws)
    assert list(stream) == [(0, 0, 1), (0, 1, -1), (1, 0, 1)]
    u = np.random.default_rng(3).random(6)
    np.testing.assert_array_equal(np.concatenate(list(stream.values())), u)
    with pytest.raises(ValueError, match="draws"):
        steps.uniform_stream(0, [np.array([-1, 2])])


def test_bad_sensitivities_are_refused(case):
    net, X = case
    s = sp.sensitivity(net, X)
    with pytest.raises(ValueError, match="one array per prunable layer"):
        steps.side_targets(net, s[:2], 10)
    with pytest.raises(TypeError, match="sensitivities"):
        steps.side_targets(net, s[0], 10)
    with pytest.raises(ValueError, match="dtype"):
        steps.side_targets(net, [a.astype(np.float32) for a in s], 10)
    with pytest.raises(ValueError, match="budget"):
        steps.side_targets(net, s, 0)
