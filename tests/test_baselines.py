"""Baselines: exact kept counts, the rule each one states, SNIP's gradient."""
import numpy as np
import pytest

from sparsify import Dense, Network, random_mlp
from sparsify import baselines as B
from sparsify import train as T


@pytest.fixture
def setup():
    net = random_mlp([12, 20, 9, 4], rng=0)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 12))
    y = rng.integers(0, 4, size=30)
    return net, X, y


@pytest.mark.parametrize("method", sorted(B.METHODS))
@pytest.mark.parametrize("keep", [0.003, 0.05, 0.3, 0.77, 1.0])
def test_each_baseline_hits_the_requested_count(setup, method, keep):
    net, X, y = setup
    res = B.prune_baseline(net, X, keep=keep, method=method, y_S=y, rng=0)
    requested = max(1, int(round(keep * net.n_weights)))
    kept = sum(int(np.count_nonzero(w)) for w in res.network.weights)
    assert kept == requested
    assert sum(int(m.sum()) for m in res.masks) == requested
    assert res.report.achieved == requested and res.report.requested == requested
    assert res.report.method == method and res.report.allocation == B.METHODS[method]
    # kept weights keep their values; biases are untouched
    for m, w, w0, l, l0 in zip(res.masks, res.network.weights, net.weights, res.network.layers, net.layers):
        np.testing.assert_array_equal(w[m], w0[m])
        np.testing.assert_array_equal(w[~m], 0.0)
        np.testing.assert_array_equal(l.bias, l0.bias)


@pytest.mark.parametrize("method", sorted(B.METHODS))
def test_pruned_weights_are_never_revived(setup, method):
    """The iterative cascade prunes a pruned network: only nonzero weights are eligible."""
    net, X, y = setup
    first = B.prune_baseline(net, X, keep=0.4, method=method, y_S=y, rng=0).network
    second = B.prune_baseline(first, X, keep=0.15, method=method, y_S=y, rng=1)
    assert sum(int(m.sum()) for m in second.masks) == int(round(0.15 * net.n_weights))
    for m, w in zip(second.masks, first.weights):
        assert not np.any(m & (w == 0))


def test_magnitude_global_keeps_the_largest_weights(setup):
    net, X, _ = setup
    masks = B.baseline_masks(net, X, budget=50, method="magnitude-global")
    kept = np.concatenate([np.abs(w)[m] for w, m in zip(net.weights, masks)])
    dropped = np.concatenate([np.abs(w)[~m] for w, m in zip(net.weights, masks)])
    assert kept.min() >= dropped.max()


def test_layer_and_row_rules_keep_equal_fractions(setup):
    net, X, _ = setup
    budget = int(round(0.25 * net.n_weights))
    layer = B.baseline_masks(net, X, budget=budget, method="magnitude-layer")
    np.testing.assert_allclose([m.mean() for m in layer], 0.25, atol=0.02)
    for m, w in zip(layer, net.weights):  # within a layer: the largest magnitudes
        assert np.abs(w)[m].min() >= np.abs(w)[~m].max()
    rows = B.baseline_masks(net, X, budget=budget, method="wanda")
    for m in rows:
        per_row = m.sum(axis=1)
        assert per_row.max() - per_row.min() <= 1, per_row


def test_wanda_ranks_within_a_row_by_weight_times_input_norm():
    W = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    net = Network([Dense(W)])
    X = np.array([[10.0, 1.0, 0.1], [10.0, 1.0, 0.1]])  # input norms 14.1, 1.41, 0.141
    masks = B.baseline_masks(net, X, budget=2, method="wanda")
    np.testing.assert_array_equal(masks[0], [[True, False, False], [True, False, False]])
    np.testing.assert_allclose(B.wanda_scores(net, X)[0][0], W[0] * np.sqrt(2) * np.array([10, 1, 0.1]))


def test_random_is_seeded_and_uniform(setup):
    net, X, _ = setup
    a = B.baseline_masks(net, X, keep=0.2, method="random", rng=5)
    b = B.baseline_masks(net, X, keep=0.2, method="random", rng=5)
    c = B.baseline_masks(net, X, keep=0.2, method="random", rng=6)
    for ma, mb in zip(a, b):
        np.testing.assert_array_equal(ma, mb)
    assert any(not np.array_equal(ma, mc) for ma, mc in zip(a, c))
    # over many seeds every weight is kept about 20% of the time
    hits = sum(np.concatenate([m.ravel() for m in B.baseline_masks(net, X, keep=0.2, method="random", rng=s)])
               for s in range(300))
    np.testing.assert_allclose(hits.mean() / 300, 0.2, atol=0.005)
    assert 0.1 < hits.min() / 300 and hits.max() / 300 < 0.33


def test_snip_score_is_weight_times_finite_difference_gradient(setup):
    net, X, y = setup
    sc = B.snip_scores(net, X, y)
    h = 1e-6
    rng = np.random.default_rng(0)
    for layer in range(len(net.layers)):
        W = net.weights[layer]
        for _ in range(5):
            idx = tuple(int(rng.integers(0, n)) for n in W.shape)
            plus, minus = W.copy(), W.copy()
            plus[idx] += h
            minus[idx] -= h
            ws_p, ws_m = list(net.weights), list(net.weights)
            ws_p[layer], ws_m[layer] = plus, minus
            g = (T.cross_entropy(net.with_weights(ws_p), X, y) - T.cross_entropy(net.with_weights(ws_m), X, y)) / (2 * h)
            np.testing.assert_allclose(sc[layer][idx], abs(W[idx] * g), rtol=1e-5, atol=1e-10)


def test_split_budget_is_exact_and_respects_caps():
    np.testing.assert_array_equal(B.split_budget(10, [5, 5, 5], [1, 10, 10]), [1, 5, 4])
    np.testing.assert_array_equal(B.split_budget(7, [1, 2, 4]), [1, 2, 4])
    np.testing.assert_array_equal(B.split_budget(100, [3, 3], [2, 5]), [2, 5])
    parts = B.split_budget(1001, [19200, 30000, 1000])
    assert parts.sum() == 1001
    np.testing.assert_allclose(parts / np.array([19200, 30000, 1000]), 1001 / 50200, rtol=0.01)


def test_errors(setup):
    net, X, _ = setup
    with pytest.raises(ValueError, match="y_S: the snip baseline needs the labels"):
        B.prune_baseline(net, X, keep=0.1, method="snip")
    with pytest.raises(ValueError, match="method: must be one of"):
        B.prune_baseline(net, X, keep=0.1, method="magnitude")
    with pytest.raises(ValueError, match="X_S: prune_baseline needs the batch S"):
        B.prune_baseline(net, None, keep=0.1)
    with pytest.raises(ValueError, match="X_S: the wanda baseline is data-aware"):
        B.baseline_masks(net, None, keep=0.1, method="wanda")
    with pytest.raises(ValueError, match="exactly one of keep"):
        B.prune_baseline(net, X, keep=0.1, budget=3)


@pytest.mark.parametrize("method", ["wanda", "snip", "undecayed"])
def test_data_aware_baselines_stream_batches_and_generators(setup, method):
    """S as a list of batches or a one-shot generator (read once) gives the array's scores and masks."""
    net, X, y = setup
    cuts = [0, 7, 19, 30]
    xb = [X[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    yb = [y[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    whole = B.scores(net, method, X, y)
    for got in (B.scores(net, method, xb, yb), B.scores(net, method, iter(xb), iter(yb))):
        for a, b in zip(got, whole):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    ref = B.prune_baseline(net, X, keep=0.3, method=method, y_S=y)
    reads = []

    def gen():
        for batch in xb:
            reads.append(len(batch))
            yield batch

    for res in (B.prune_baseline(net, xb, keep=0.3, method=method, y_S=yb),
                B.prune_baseline(net, gen(), keep=0.3, method=method, y_S=iter(yb))):
        for a, b in zip(res.masks, ref.masks):
            np.testing.assert_array_equal(a, b)
        assert res.report.n_points == X.shape[0]
        for r1, r2 in zip(res.report.layers, ref.report.layers):   # the report reads S too
            assert r1["eps_max"] == pytest.approx(r2["eps_max"], rel=1e-9)
    assert reads == [7, 12, 11]                                    # the generator was read once


def test_snip_with_batches_needs_label_batches(setup):
    net, X, y = setup
    with pytest.raises(ValueError, match="y_S: with S given as batches"):
        B.prune_baseline(net, iter([X[:10], X[10:]]), keep=0.3, method="snip", y_S=y)
    with pytest.raises(ValueError, match="fewer label batches"):
        B.scores(net, "snip", [X[:10], X[10:]], [y[:10]])
