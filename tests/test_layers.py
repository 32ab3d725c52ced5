"""Per-layer control of sp.prune and the baselines: keep per layer (sequence or
mapping), layers= / exclude= (dense layers, bit for bit), refusals; plus the
short repr, the report's footer, boolean seeds and reweighting overflow."""
import numpy as np
import pytest

import sparsify as sp
from sparsify import baselines
from sparsify.prune import COUNT_RTOL


@pytest.fixture(scope="module")
def setup():
    net = sp.random_mlp([12, 30, 20, 5], rng=0)
    X = np.random.default_rng(1).standard_normal((60, 12))
    return net, X


def _kept(w):
    return int(np.count_nonzero(w))


@pytest.mark.parametrize("method", ["det", "rand", "hybrid"])
def test_excluded_layers_stay_dense_bit_for_bit_and_outside_the_budget(setup, method):
    net, X = setup
    res = sp.prune(net, X, keep=0.2, method=method, rng=3, exclude=[0, -1])
    for k in (0, 2):
        assert res.network.weights[k].tobytes() == net.weights[k].tobytes()
        assert res.network.layers[k].bias.tobytes() == net.layers[k].bias.tobytes()
        assert res.masks[k].all() and not res.sides[k].sampled.any() and not res.sides[k].eps.any()
    n1 = net.weights[1].size
    assert res.report.requested == round(0.2 * n1)      # the budget counts layer 1 only
    assert res.report.achieved == _kept(res.network.weights[1])
    if method == "det":
        assert res.report.achieved == res.report.requested
    else:
        assert abs(res.report.achieved - res.report.requested) <= max(10, COUNT_RTOL * res.report.requested)
    assert res.report.excluded == [0, 2] and res.report.pruned_total == n1
    assert [row["excluded"] for row in res.report.layers] == [True, False, True]
    table = res.report.format_table()
    assert "layers 0, 2 left dense" in table and "0 dense" in table
    # layers= names the complement: the same result, bit for bit
    same = sp.prune(net, X, keep=0.2, method=method, rng=3, layers=[1])
    for a, b in zip(res.network.weights, same.network.weights):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("method", ["det", "hybrid", "rand"])
def test_per_layer_keep_meets_each_layers_fraction(setup, method):
    net, X = setup
    fractions = [0.5, 0.1, 0.6]
    res = sp.prune(net, X, keep=fractions, method=method, rng=2)
    for k, (f, w) in enumerate(zip(fractions, net.weights)):
        want = round(f * w.size)
        got = _kept(res.network.weights[k])
        if method == "det":
            assert got == want
        else:  # sampled sides miss by the noise of the last few sides
            assert abs(got - want) <= max(10, COUNT_RTOL * want), (k, got, want)
    assert res.report.layer_keep == {0: 0.5, 1: 0.1, 2: 0.6}
    assert res.report.requested == sum(round(f * w.size) for f, w in zip(fractions, net.weights))


def test_a_mapping_prunes_the_named_layers_and_leaves_the_rest_dense(setup):
    net, X = setup
    res = sp.prune(net, X, keep={1: 0.25}, method="det")
    assert _kept(res.network.weights[1]) == round(0.25 * net.weights[1].size)
    for k in (0, 2):
        assert res.network.weights[k].tobytes() == net.weights[k].tobytes()
    assert res.report.excluded == [0, 2]


def test_one_layer_budget_equals_pruning_that_layer_alone(setup):
    """A per-layer budget is allocated within the layer: the same as excluding the others."""
    net, X = setup
    a = sp.prune(net, X, keep={1: 0.3}, method="hybrid", rng=5)
    b = sp.prune(net, X, keep=0.3, method="hybrid", rng=5, layers=[1])
    for x, y in zip(a.network.weights, b.network.weights):
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(keep=[0.5, 0.1]), ValueError, ["keep", "one fraction per layer", "3"]),
    (dict(keep=[0.5, 0.0, 0.5]), ValueError, ["keep[1]"]),
    (dict(keep=[0.5, 1.5, 0.5]), ValueError, ["keep[1]"]),
    (dict(keep=[0.5, True, 0.5]), TypeError, ["keep[1]"]),
    (dict(keep={3: 0.5}), ValueError, ["keep", "layer index"]),
    (dict(keep={1: -0.5}), ValueError, ["keep[1]"]),
    (dict(keep={}), ValueError, ["keep", "empty"]),
    (dict(keep=[0.5, 0.5, 0.5], exclude=[0]), ValueError, ["keep", "exclude"]),
    (dict(keep=[0.5, 0.5, 0.5], budget=10), ValueError, ["keep", "budget"]),
    (dict(keep=0.5, layers=[1], exclude=[0]), ValueError, ["layers", "exclude"]),
    (dict(keep=0.5, exclude=[3]), ValueError, ["exclude[0]"]),
    (dict(keep=0.5, exclude=[-4]), ValueError, ["exclude[0]"]),
    (dict(keep=0.5, exclude=[0, 1, 2]), ValueError, ["exclude", "every layer"]),
    (dict(keep=0.5, layers=[]), ValueError, ["layers", "empty"]),
    (dict(keep=0.5, layers=[1, 1]), ValueError, ["layers", "once"]),
    (dict(keep=0.5, layers=[1.0]), TypeError, ["layers[0]"]),
    (dict(keep=0.5, exclude="0"), TypeError, ["exclude"]),
])
def test_bad_layer_selections_are_refused(setup, kwargs, exc, words):
    net, X = setup
    for call in (lambda: sp.prune(net, X, rng=0, **kwargs),
                 lambda: baselines.prune_baseline(net, X, method="magnitude-global", **kwargs)):
        with pytest.raises(exc) as info:
            call()
        for w in words:
            assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize("method", sorted(baselines.METHODS))
def test_baselines_take_per_layer_keep_and_exclude(setup, method):
    net, X = setup
    y = np.random.default_rng(4).integers(0, 5, X.shape[0])
    res = baselines.prune_baseline(net, X, keep=0.3, method=method, y_S=y, rng=0, exclude=[0])
    assert res.network.weights[0].tobytes() == net.weights[0].tobytes()
    assert res.report.achieved == res.report.requested == round(0.3 * (net.weights[1].size + net.weights[2].size))
    assert res.report.excluded == [0]
    per = baselines.prune_baseline(net, X, keep=[1.0, 0.2, 0.5], method=method, y_S=y, rng=0)
    for f, w, w_hat in zip([1.0, 0.2, 0.5], net.weights, per.network.weights):
        assert _kept(w_hat) == round(f * w.size)


def test_default_calls_are_unchanged_by_the_layer_options(setup):
    net, X = setup
    a = sp.prune(net, X, keep=0.2, method="hybrid", rng=1)
    b = sp.prune(net, X, keep=0.2, method="hybrid", rng=1, layers=[0, 1, 2])
    c = sp.prune(net, X, keep=0.2, method="hybrid", rng=1, exclude=[])
    for x, y, z in zip(a.network.weights, b.network.weights, c.network.weights):
        assert x.tobytes() == y.tobytes() == z.tobytes()


# --- repr, footer, seeds, overflow ---------------------------------------------------------------
def test_repr_is_a_short_summary(setup):
    net, X = setup
    res = sp.prune(net, X, keep=0.2, method="det", exclude=[2])
    text = repr(res)
    assert len(text) < 400 and text.count("\n") <= 5
    assert "'det'" in text and "'global'" in text and "2: 100/100 dense" in text
    assert f"{res.report.achieved}" in text


def test_the_printed_report_explains_its_columns(setup):
    net, X = setup
    text = str(sp.prune(net, X, keep=0.2, method="det").report)
    for word in ("+bias", "full", "det", "eps > 1 means the bound says nothing", "err", "dead", "sampled"):
        assert word in text.split("columns:")[1], word


@pytest.mark.parametrize("rng", [True, False, np.bool_(True)])
def test_booleans_are_not_seeds(setup, rng):
    net, X = setup
    with pytest.raises(TypeError, match="rng: booleans are not seeds"):
        sp.prune(net, X, keep=0.5, rng=rng)


def test_reweighting_overflow_is_reported_as_overflow():
    rng = np.random.default_rng(0)
    W = np.abs(rng.standard_normal((4, 20))).astype(np.float32)
    W[:, 0] = 3e38                                        # finite, near float32's largest
    X = rng.uniform(0.5, 1, (30, 20)).astype(np.float32)
    X[:, 0] = 1e-38
    net = sp.Network([sp.Dense(W, None, "identity")])
    messages = []
    for seed in range(4):
        try:
            sp.prune(net, X, keep=0.2, method="rand", rng=seed)
        except ValueError as exc:
            messages.append(str(exc))
    assert messages                                       # the large weight is drawn for some seeds
    for msg in messages:
        assert "reweighting overflowed" in msg and "float32" in msg and "NaN" not in msg
