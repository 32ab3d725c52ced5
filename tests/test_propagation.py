"""Network-level propagation (sparsify.verify.propagation, docs/theory.md S12) against its definitions."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsify.testing import strategies as sst
from sparsify.verify import propagation as P


def test_cancellation_formula_and_edge_cases():
    A = np.array([[1.0, 2.0], [0.0, 0.0], [1.0, 1.0]])
    W = np.array([[1.0, -1.0], [2.0, 3.0]])
    D = P.cancellation(A, W)
    # point 0: z = (-1, 8), sum |w a| = (3, 8); point 1: all zero; point 2: z = (0, 5)
    np.testing.assert_array_equal(D, [[3.0, 1.0], [0.0, 0.0], [np.inf, 1.0]])
    D_b = P.cancellation(A, W, b=np.array([1.0, -8.0]))
    np.testing.assert_allclose(D_b[0], [np.inf, np.inf])
    np.testing.assert_allclose(D_b[2], [2.0, 5.0 / 3.0])


def test_propagate_matches_the_unrolled_sum():
    eps = [0.05, 0.02, 0.1]
    D = [2.0, 1.5, 3.0]
    D_l = np.cumprod(D[::-1])[::-1]
    closed = sum(eps[l] * D_l[l] * np.prod([1 + e for e in eps[l + 1:]]) for l in range(3))
    np.testing.assert_allclose(P.propagate(eps, D), closed, rtol=1e-14)


@given(st.lists(st.floats(1.0, 5.0), min_size=1, max_size=5), st.floats(1e-4, 0.5))
def test_layer_tolerances_meet_the_output_target(D, eps):
    tol = P.layer_tolerances(eps, D)
    E = P.propagate(tol, D, activations=["identity"] * len(D))
    assert E <= eps * np.prod(1 + tol) * (1 + 1e-12)
    # to first order the target is met exactly: sum_l eps_l D_l = eps
    np.testing.assert_allclose(np.sum(tol * np.cumprod(np.asarray(D)[::-1])[::-1]), eps, rtol=1e-12)


def test_propagate_stops_at_a_sign_flip_unless_linear():
    assert P.propagate([0.5, 0.1], [4.0, 1.0]) == math.inf
    assert math.isfinite(P.propagate([0.5, 0.1], [4.0, 1.0], activations=["identity", "identity"]))
    with pytest.raises(ValueError, match="activations"):
        P.propagate([0.1, 0.1], [1.0, 1.0], activations=["sigmoid", "identity"])
    with pytest.raises(ValueError, match="delta_layers"):
        P.propagate([0.1, 0.1], [1.0])


_PRESERVING = ("relu", "leaky_relu", "tanh", "identity")


@given(
    sst.networks_with_inputs(n_layers=(1, 4), activations=_PRESERVING, n_points=(1, 5)),
    st.data(),
)
def test_propagate_bounds_the_output_of_any_side_wise_perturbation(net_X, data):
    """If every weight moves by a factor in [1 - eps_l, 1 + eps_l], each side (at any input) is
    within (1 ± eps_l): the network-level statement then bounds the output pre-activation."""
    net, X = net_X
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    eps = [data.draw(st.floats(0.0, 0.3)) for _ in net.layers]
    weights = [W * (1 + e * rng.uniform(-1, 1, W.shape)) for W, e in zip(net.weights, eps)]
    pruned = net.with_weights(weights)
    A, A_hat = net.trace(X), pruned.trace(X)
    z = A[-1] @ net.layers[-1].weight.T + (0 if net.layers[-1].bias is None else net.layers[-1].bias)
    z_hat = A_hat[-1] @ pruned.layers[-1].weight.T + (0 if net.layers[-1].bias is None else net.layers[-1].bias)
    D = [P.cancellation(a, layer.weight, layer.bias) for a, layer in zip(A, net.layers)]
    E = P.propagate(eps, D, activations=net.activations)
    err = np.abs(z_hat - z)
    finite = np.isfinite(E)[:, None] & np.ones_like(z, dtype=bool)
    limit = np.where(finite, np.where(np.isfinite(E), E, 0.0)[:, None] * np.abs(z), np.inf)
    ok = ~finite | (err <= limit * (1 + 1e-6) + 1e-9 * (1 + np.abs(z)))
    assert ok.all(), (err[~ok], limit[~ok])


@given(
    sst.networks_with_inputs(n_layers=(1, 4), activations=("relu", "leaky_relu", "tanh", "sigmoid", "identity"),
                             n_points=(1, 5)),
    st.data(),
)
def test_propagate_forward_bounds_any_side_wise_perturbation(net_X, data):
    """The per-neuron forward bound holds for every activation and is never above propagate()."""
    net, X = net_X
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    eps = [data.draw(st.floats(0.0, 0.5)) for _ in net.layers]
    pruned = net.with_weights([W * (1 + e * rng.uniform(-1, 1, W.shape)) for W, e in zip(net.weights, eps)])
    A = net.trace(X)
    z = net.layers[-1].preactivation(A[-1])
    z_hat = pruned.layers[-1].preactivation(pruned.trace(X)[-1])
    d = P.propagate_forward(eps, net.weights, A, net.activations, [layer.bias for layer in net.layers])
    assert d.shape == z.shape
    err = np.abs(z_hat - z)
    assert np.all(err <= d * (1 + 1e-6) + 1e-9 * (1 + np.abs(z))), (err, d)
    if all(a in P.RELATIVE_ERROR_ACTIVATIONS for a in net.activations[:-1]):
        D = [P.cancellation(a, layer.weight, layer.bias) for a, layer in zip(A, net.layers)]
        E = P.propagate(eps, D, activations=net.activations)
        fin = np.isfinite(E)
        rel = np.max(np.where(np.abs(z) > 0, d / np.where(np.abs(z) > 0, np.abs(z), 1.0), np.where(d > 0, np.inf, 0.0)), axis=1)
        assert np.all(rel[fin] <= E[fin] * (1 + 1e-9) + 1e-12)


def test_propagate_forward_validates():
    with pytest.raises(ValueError, match="one entry per layer"):
        P.propagate_forward([0.1], [np.eye(2), np.eye(2)], [np.eye(2)], ["relu"], [None])
    with pytest.raises(ValueError, match="softplus"):
        P.propagate_forward([0.1], [np.eye(2)], [np.eye(2)], ["softplus"])
