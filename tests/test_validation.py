"""Bad input at the public boundary: every row raises the right exception type
with a message that names the parameter, and nothing the caller passed is
changed."""
import numpy as np
import pytest

import sparsify as sp
from sparsify._validation import as_float_array, check_keep_budget, check_rng


@pytest.fixture(scope="module")
def net():
    return sp.random_mlp([4, 5, 3], rng=0)


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(1).standard_normal((6, 4))


def _raises(exc_type, names, fn):
    """Call ``fn`` and check the exception type and that the message names the parameter."""
    with pytest.raises(exc_type) as info:
        fn()
    msg = str(info.value)
    for name in names if isinstance(names, (list, tuple)) else [names]:
        assert name in msg, f"message {msg!r} does not mention {name!r}"
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    return msg


# --- shapes -----------------------------------------------------------------------
def test_layers_with_mismatched_shapes_are_refused():
    msg = _raises(ValueError, "layers[1]",
                  lambda: sp.Network([sp.Dense(np.ones((5, 4))), sp.Dense(np.ones((3, 4)))]))
    assert "5" in msg and "4" in msg  # the two sizes that disagree


def test_layers_with_mixed_dtypes_are_refused():
    _raises(TypeError, "dtype", lambda: sp.Network([
        sp.Dense(np.ones((3, 2), np.float32)), sp.Dense(np.ones((1, 3), np.float64))]))


def test_empty_network_and_non_layer_are_refused():
    _raises(ValueError, "layers", lambda: sp.Network([]))
    _raises(TypeError, "layers[0]", lambda: sp.Network([np.ones((2, 2))]))


@pytest.mark.parametrize("weight, exc", [
    (np.ones(3), ValueError),                 # 1-D
    (np.ones((2, 2, 2)), ValueError),         # 3-D
    (np.ones((0, 3)), ValueError),            # no outputs
    (np.ones((3, 0)), ValueError),            # no inputs
    (np.ones((2, 2), complex), TypeError),
    (np.array([["a", "b"]]), TypeError),
])
def test_bad_weight_arrays_are_refused(weight, exc):
    _raises(exc, "weight", lambda: sp.Dense(weight))


@pytest.mark.parametrize("bias", [np.ones(3), np.ones((2, 1)), np.ones(1)])
def test_bias_of_the_wrong_shape_is_refused(bias):
    msg = _raises(ValueError, "bias", lambda: sp.Dense(np.ones((2, 4)), bias))
    assert "(2,)" in msg or "2-D" in msg or "1-D" in msg


def test_bias_of_another_dtype_is_refused():
    _raises(TypeError, "bias", lambda: sp.Dense(np.ones((2, 4)), np.ones(2, np.float32)))


@pytest.mark.parametrize("func", ["prune", "sensitivity", "forward"])
@pytest.mark.parametrize("bad, what", [
    (lambda X: X[:, :3], "features"),          # wrong width
    (lambda X: X[0], "shape"),                 # 1-D
    (lambda X: X[None], "shape"),              # 3-D
])
def test_data_of_the_wrong_shape_is_refused(net, X, func, bad, what):
    data = bad(X)
    name = "X" if func == "forward" else "X_S"
    call = {
        "prune": lambda: sp.prune(net, data, keep=0.5, rng=0),
        "sensitivity": lambda: sp.sensitivity(net, data),
        "forward": lambda: net.forward(data),
    }[func]
    msg = _raises(ValueError, [name, what], call)
    assert str(net.n_in) in msg


@pytest.mark.parametrize("func", ["prune", "sensitivity"])
def test_empty_batch_is_refused(net, X, func):
    call = {"prune": lambda: sp.prune(net, X[:0], keep=0.5, rng=0),
            "sensitivity": lambda: sp.sensitivity(net, X[:0])}[func]
    _raises(ValueError, ["X_S", "empty"], call)


# --- non-finite values ---------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_or_bias_is_refused(value):
    W = np.ones((2, 3))
    W[1, 2] = value
    _raises(ValueError, ["weight", "NaN or infinite"], lambda: sp.Dense(W))
    b = np.zeros(2)
    b[0] = value
    _raises(ValueError, ["bias", "NaN or infinite"], lambda: sp.Dense(np.ones((2, 3)), b))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("func", ["prune", "sensitivity"])
def test_non_finite_data_is_refused(net, X, value, func):
    bad = X.copy()
    bad[3, 1] = value
    call = {"prune": lambda: sp.prune(net, bad, keep=0.5, rng=0),
            "sensitivity": lambda: sp.sensitivity(net, bad)}[func]
    _raises(ValueError, ["X_S", "NaN or infinite"], call)


# --- keep / budget ----------------------------------------------------------------------
@pytest.mark.parametrize("keep, exc", [
    (0, ValueError), (0.0, ValueError), (-0.1, ValueError), (1.5, ValueError),
    (1.0000001, ValueError), (np.nan, ValueError), (np.inf, ValueError),
    ("0.5", TypeError), (True, TypeError), (False, TypeError), ([0.5], ValueError), ({"a": 0.5}, TypeError),
])
def test_keep_outside_the_unit_interval_is_refused(net, X, keep, exc):
    _raises(exc, "keep", lambda: sp.prune(net, X, keep=keep, rng=0))


@pytest.mark.parametrize("budget, exc", [
    (0, ValueError), (-3, ValueError), (36, ValueError), (10**9, ValueError),
    (2.5, TypeError), (10.0, TypeError), ("10", TypeError), (True, TypeError),
])
def test_bad_budget_is_refused(net, X, budget, exc):
    assert net.n_weights == 35
    _raises(exc, "budget", lambda: sp.prune(net, X, budget=budget, rng=0))


def test_budget_message_gives_the_weight_count(net, X):
    msg = _raises(ValueError, "budget", lambda: sp.prune(net, X, budget=36, rng=0))
    assert "35" in msg


@pytest.mark.parametrize("kwargs", [dict(), dict(keep=0.5, budget=3), dict(keep=None, budget=None)])
def test_exactly_one_of_keep_and_budget(net, X, kwargs):
    _raises(ValueError, ["keep", "budget"], lambda: sp.prune(net, X, rng=0, **kwargs))


def test_keep_and_budget_accept_numpy_scalars(net, X):
    assert check_keep_budget(np.float32(0.5), None, 35) == 18
    assert check_keep_budget(None, np.int64(7), 35) == 7
    assert check_keep_budget(1, None, 35) == 35


@pytest.mark.parametrize("keep, total, expected", [
    (0.1, 35, 4), (0.5, 35, 18), (1.0, 35, 35), (1e-9, 35, 1), (0.2, 10, 2), (0.25, 10, 2),
])
def test_keep_rounds_to_a_budget_of_at_least_one(keep, total, expected):
    # round half to even (Python's round); never 0, never above total
    assert check_keep_budget(keep, None, total) == expected


# --- options -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["foo", "DET", "", None, 1])
def test_unknown_method(net, X, method):
    _raises(ValueError, "method", lambda: sp.prune(net, X, keep=0.5, method=method, rng=0))


@pytest.mark.parametrize("allocation", ["foo", "Global", "", 1])
def test_unknown_allocation(net, X, allocation):
    _raises(ValueError, "allocation", lambda: sp.prune(net, X, keep=0.5, allocation=allocation, rng=0))


def test_unknown_activation():
    msg = _raises(ValueError, ["activation", "swish"], lambda: sp.Dense(np.ones((2, 2)), None, "swish"))
    assert "relu" in msg  # lists the known names
    _raises(TypeError, "activation", lambda: sp.Dense(np.ones((2, 2)), None, np.tanh))


@pytest.mark.parametrize("delta, exc", [
    (0, ValueError), (0.0, ValueError), (1, ValueError), (1.0, ValueError), (-0.1, ValueError),
    (1.5, ValueError), (np.nan, ValueError), ("0.1", TypeError), (True, TypeError),
])
def test_delta_outside_the_open_unit_interval(net, X, delta, exc):
    _raises(exc, "delta", lambda: sp.prune(net, X, keep=0.5, delta=delta, rng=0))


@pytest.mark.parametrize("C, exc", [
    (0, ValueError), (0.0, ValueError), (-1.0, ValueError), (0.5, ValueError), (np.nan, ValueError),
    (np.inf, ValueError), ("3", TypeError), (None, TypeError), (True, TypeError),
])
def test_C_must_be_at_least_one(net, X, C, exc):
    _raises(exc, "C", lambda: sp.prune(net, X, keep=0.5, C=C, rng=0))


@pytest.mark.parametrize("rng, exc", [
    (1.5, TypeError), ("0", TypeError), (np.random.RandomState(0), TypeError), ([0], TypeError),
    (-1, ValueError), (True, TypeError), (False, TypeError),
])
def test_bad_rng(net, X, rng, exc):
    _raises(exc, "rng", lambda: sp.prune(net, X, keep=0.5, rng=rng))


def test_check_rng_accepts_the_documented_kinds():
    g = np.random.default_rng(3)
    assert check_rng(g) is g
    assert isinstance(check_rng(None), np.random.Generator)
    np.testing.assert_array_equal(check_rng(7).random(5), np.random.default_rng(7).random(5))
    np.testing.assert_array_equal(check_rng(np.int32(7)).random(5), np.random.default_rng(7).random(5))


def test_network_argument_must_be_a_network(X):
    _raises(TypeError, "network", lambda: sp.prune("model.npz", X, keep=0.5))
    _raises(TypeError, "network", lambda: sp.sensitivity([np.ones((2, 4))], X))


def test_as_float_array_casts_integers_and_refuses_objects():
    out = as_float_array(np.arange(4).reshape(2, 2), "w")
    assert out.dtype == np.float64
    assert as_float_array(np.ones(2, np.float16), "w").dtype == np.float64
    _raises(TypeError, "w", lambda: as_float_array(np.array([object()]), "w"))
    _raises(TypeError, "w", lambda: as_float_array([[1.0], [1.0, 2.0]], "w"))


# --- nothing the caller passed is changed ------------------------------------------------------
@pytest.mark.parametrize("method", ["det", "rand", "hybrid"])
@pytest.mark.parametrize("allocation", ["global", "balanced"])
def test_prune_and_sensitivity_do_not_mutate_inputs(method, allocation):
    rng = np.random.default_rng(2)
    W0, b0 = rng.standard_normal((6, 4)), rng.standard_normal(6)
    W1 = rng.standard_normal((3, 6))
    X = rng.standard_normal((7, 4))           # signed: the first layer sign-splits it
    X_f = np.asfortranarray(X.copy())          # and a non-contiguous layout
    copies = [a.copy() for a in (W0, b0, W1, X, X_f)]
    net = sp.Network([sp.Dense(W0, b0, "relu"), sp.Dense(W1, None, "identity")])
    net_w = [w.copy() for w in net.weights]
    for data in (X, X_f):
        sp.sensitivity(net, data)
        sp.prune(net, data, keep=0.4, method=method, allocation=allocation, rng=0)
    for before, after in zip(copies, (W0, b0, W1, X, X_f)):
        np.testing.assert_array_equal(after, before)
    for before, after in zip(net_w, net.weights):
        np.testing.assert_array_equal(after, before)
    assert X.flags.writeable and X_f.flags.writeable  # the caller's flags are untouched


def test_float32_data_for_a_float64_network_is_not_mutated():
    net = sp.random_mlp([3, 4, 2], rng=0)
    X = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    before = X.copy()
    res = sp.prune(net, X, keep=0.5, method="rand", rng=0)
    np.testing.assert_array_equal(X, before)
    assert X.dtype == np.float32
    assert res.network.dtype == np.float64
