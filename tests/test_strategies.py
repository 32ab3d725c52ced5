"""The public Hypothesis strategies: they draw what they promise and reject bad arguments early."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsify
from sparsify.testing import strategies as sst


def test_importing_sparsify_does_not_import_hypothesis():
    code = "import sys, sparsify, sparsify.testing, sparsify.verify, sparsify.bounds; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@given(sst.networks(n_layers=(2, 3), widths=(2, 5), n_in=4, activations=("relu", "tanh"),
                    dtypes=("float32", "float64"), bias=True))
def test_networks_respect_their_arguments(net):
    assert isinstance(net, sparsify.Network)
    assert 2 <= len(net) <= 3
    assert net.n_in == 4
    assert all(2 <= layer.n_out <= 5 for layer in net.layers)
    assert all(a in ("relu", "tanh") for a in net.activations[:-1])
    assert net.activations[-1] == "identity"
    assert net.dtype in (np.float32, np.float64)
    assert all(layer.bias is not None for layer in net.layers)
    for W in net.weights:
        mag = np.abs(W[W != 0])
        assert np.all((mag >= np.float32(1e-3) * (1 - 1e-6)) & (mag <= 2.0))


@given(sst.networks(bias=False, zeros=False, dtypes="float32"))
def test_networks_without_bias_or_zeros(net):
    assert all(layer.bias is None for layer in net.layers)
    assert all(np.count_nonzero(W) == W.size for W in net.weights)
    assert net.dtype == np.float32


@given(sst.networks_with_inputs(signed=False, n_points=(2, 4)))
def test_networks_with_inputs_fit_and_are_nonnegative(pair):
    net, X = pair
    assert X.shape[1] == net.n_in and 2 <= X.shape[0] <= 4
    assert X.dtype == net.dtype
    assert np.all(X >= 0)
    net(X)  # runs


@given(sst.inputs(3, n_points=5, signed=True, zeros=False))
def test_signed_inputs(X):
    assert X.shape == (5, 3)
    assert np.all(np.abs(X) >= 1e-3)


@given(st.data())
def test_budgets_within_the_network(data):
    net = data.draw(sst.networks())
    B = data.draw(sst.budgets(net, min_keep=0.2, max_keep=0.5))
    assert 1 <= B <= net.n_weights
    assert B >= np.ceil(0.2 * net.n_weights) or B == 1 or B == net.n_weights


@given(sst.eps_delta(eps=(0.01, 0.5), delta=(1e-12, 0.1)))
def test_eps_delta_ranges(pair):
    eps, delta = pair
    assert 0.01 <= eps <= 0.5 and 1e-12 <= delta <= 0.1


@given(sst.keeps(0.05, 0.5))
def test_keeps_range(keep):
    assert 0.05 <= keep <= 0.5


@given(sst.side_sensitivities(sorted_desc=True))
def test_side_sensitivities_are_realisable(s):
    assert np.all((s >= 0) & (s <= 1))
    assert s.sum() >= 1 - 1e-12
    assert np.all(np.diff(s) <= 0)


@given(sst.networks_with_inputs(n_points=(1, 5)))
def test_strategies_feed_the_exact_invariant_of_s4(pair):
    """Used as intended: on every live side, the relative importances sum to 1 at each point."""
    from sparsify import reference as ref

    net, X = pair
    A = ref.split_inputs(net.trace(X)[0].astype(np.float64))
    W = net.weights[0].astype(np.float64)
    for a in A:
        g = ref.relative_importance_point(a, W)
        for side in (W > 0, W < 0):
            z = np.where(side, W, 0) @ a
            sums = np.where(side, g, 0).sum(axis=1)
            np.testing.assert_allclose(sums[z != 0], 1.0, rtol=1e-9)


@pytest.mark.parametrize(
    "make, exc, text",
    [
        (lambda: sst.networks(n_layers=0), ValueError, "n_layers"),
        (lambda: sst.networks(widths=(5, 2)), ValueError, "widths"),
        (lambda: sst.networks(widths="3"), TypeError, "widths"),
        (lambda: sst.networks(activations=("relu", "swish")), ValueError, "swish"),
        (lambda: sst.networks(dtypes="float16"), ValueError, "dtypes"),
        (lambda: sst.networks(bias="yes"), TypeError, "bias"),
        (lambda: sst.networks(min_magnitude=3.0, max_magnitude=1.0), ValueError, "min_magnitude"),
        (lambda: sst.inputs(0), ValueError, "n_in"),
        (lambda: sst.inputs(3, signed="no"), TypeError, "signed"),
        (lambda: sst.budgets("net"), TypeError, "network"),
        (lambda: sst.eps_delta(delta=(0.1, 1.0)), ValueError, "delta"),
        (lambda: sst.eps_delta(eps=(-1.0, 0.5)), ValueError, "eps"),
        (lambda: sst.keeps(0.0, 0.5), ValueError, "keep"),
        (lambda: sst.side_sensitivities(n=0), ValueError, "n"),
    ],
)
def test_bad_arguments_fail_when_the_strategy_is_built(make, exc, text):
    with pytest.raises(exc, match=text):
        make()


def test_budgets_rejects_bad_fractions():
    net = sparsify.random_mlp([3, 2], rng=0)
    with pytest.raises(ValueError, match="min_keep"):
        sst.budgets(net, min_keep=0.6, max_keep=0.5)
