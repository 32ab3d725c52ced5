"""The sensitivity kernel against the NumPy reference (docs/theory.md S1–S5).

Reference-vs-kernel on Hypothesis-drawn layers and on named edge cases, exact
invariants, dtype preservation and thread-count determinism. No timings here:
speed lives in benchmarks/.
"""
import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sparsify as sp
from sparsify import reference
from sparsify._config import ATOL, RTOL
from sparsify.testing import strategies as sst

sens = importlib.import_module("sparsify.sensitivity")  # the module; sparsify.sensitivity is the function

DTYPES = [np.float64, np.float32]
# small tiles so that tails in i, j and x are exercised on tiny layers
ODD_TILES = {"tile_i": 3, "tile_j": 2, "tile_x": 5}


def assert_close_to_reference(s, A, W):
    dt = np.dtype(W.dtype)
    expected = reference.sensitivity_layer(A, W)
    assert s.dtype == dt
    assert s.shape == W.shape
    np.testing.assert_allclose(s, expected, rtol=RTOL[dt], atol=ATOL[dt])


@st.composite
def layers(draw, signed=None):
    """(A, W) with shapes up to 12 in both dtypes, A nonnegative or signed."""
    dt = draw(sst.dtypes())
    W = draw(sst.weight_matrices((1, 12), (1, 12), dtype=dt))
    sgn = draw(st.booleans()) if signed is None else signed
    A = draw(sst.inputs(W.shape[1], n_points=(1, 12), signed=sgn, dtype=dt))
    return A, W


@given(layers(), st.integers(1, 6))
def test_kernel_matches_reference(layer, chunk_size):
    A, W = layer
    s = sens._sensitivity_layer(A, W, chunk_size=chunk_size)
    assert_close_to_reference(s, A, W)


@given(layers())
def test_tiles_and_chunks_do_not_change_bits_of_the_maximum(layer):
    A, W = layer
    base = sens._sensitivity_layer(A, W)
    np.testing.assert_array_equal(sens._sensitivity_layer(A, W, tiles=ODD_TILES), base)
    # the same blocks of points, other tiles: identical bytes
    assert sens._sensitivity_layer(A, W, tiles={"tile_i": 1, "tile_j": 1, "tile_x": 1}).tobytes() == base.tobytes()


@given(layers())
def test_exact_invariants(layer):
    A, W = layer
    s = sens._sensitivity_layer(A, W, tiles=ODD_TILES)
    assert np.all(s >= 0) and np.all(s <= 1)
    assert np.all(s[W == 0] == 0)
    # s is the maximum over points of g, which sums to 1 on every live side
    g = reference.relative_importance(reference.split_inputs(A), W)
    dt = np.dtype(W.dtype)
    for side in (W > 0, W < 0):
        sums = np.where(side[None], g, 0).sum(axis=2)  # (points, n_out)
        live = sums > 0
        np.testing.assert_allclose(sums[live], 1, rtol=10 * RTOL[dt] + 12 * np.finfo(dt).eps)
        # a live side at some point has S_i = sum_j s_ij >= 1 (up to rounding)
        S_i = np.where(side, s, 0).sum(axis=1)
        alive = live.any(axis=0)
        assert np.all(S_i[alive] >= 1 - 10 * RTOL[dt] - 12 * np.finfo(dt).eps)
        assert np.all(S_i[~alive] == 0)
    # s_ij >= g_ij(x) for every point: the kernel takes a maximum, not a sample
    assert np.all(s[None] >= g - ATOL[dt] - RTOL[dt] * g)


def _edge_cases(dtype=np.float64):
    """Named (A, W) pairs; magnitudes chosen so that every product stays a normal number in ``dtype``."""
    tiny, huge, spread = (1e-150, 1e150, 100) if dtype == np.float64 else (1e-18, 1e17, 15)
    rng = np.random.default_rng(7)
    A = np.abs(rng.standard_normal((6, 5)))
    W = rng.standard_normal((4, 5))
    cases = {}
    Wn = W.copy()
    Wn[1] = -np.abs(Wn[1])  # a neuron with only a negative side
    Wn[2] = np.abs(Wn[2])  # and one with only a positive side
    cases["all-negative and all-positive weight rows"] = (A, Wn)
    Az = A.copy()
    Az[2] = 0  # a zero point
    Az[:, 3] = 0  # an input that is never active
    cases["zero row and zero column of A"] = (Az, W)
    Wd = W.copy()
    Wd[0, [0, 1]] = [1.0, -1.0]
    Ad = A.copy()
    Ad[:, [2, 3, 4]] = 0  # neuron 0 only sees inputs 0 and 1 ...
    Wd[0, 2:] = [2.0, -3.0, 4.0]
    Ad[:, 0] = 0  # ... and input 0 is dead too: the positive side of neuron 0 is dead at every point
    cases["dead side at every point"] = (Ad, Wd)
    cases["one neuron"] = (A, W[:1])
    cases["one point"] = (A[:1], W)
    cases["one input"] = (A[:, :1], W[:, :1])
    cases["zero weights"] = (A, np.zeros_like(W))
    cases["ties"] = (np.ones((5, 5)), np.where(W > 0, 1.0, -1.0))
    cases["repeated points"] = (np.vstack([A[:1]] * 7), W)
    cases["tiny magnitudes"] = (A * tiny, W * tiny)
    cases["huge magnitudes"] = (A * huge, W * huge)
    cases["mixed magnitudes"] = (A * np.logspace(-spread, spread, 5)[None], W)
    cases["signed inputs"] = (rng.standard_normal((6, 5)), W)
    cases["all-negative inputs"] = (-A, W)
    return {name: (a.astype(dtype), w.astype(dtype)) for name, (a, w) in cases.items()}


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_cases_match_reference(name, dtype):
    A, W = _edge_cases(dtype)[name]
    for chunk_size in (1, 4, 512):
        s = sens._sensitivity_layer(A, W, chunk_size=chunk_size, tiles=ODD_TILES)
        assert_close_to_reference(s, A, W)
        assert np.all((s >= 0) & (s <= 1))
        assert np.all(s[W == 0] == 0)


def test_dead_side_gives_zero_sensitivity():
    A, W = EDGE_CASES["dead side at every point"]
    s = sens._sensitivity_layer(A, W)
    assert np.all(s[0, W[0] > 0] == 0)  # the positive side of neuron 0 sees only zeros
    assert s[0, W[0] < 0].sum() >= 1 - 1e-12  # the negative side is alive


def test_ties_give_exactly_one():
    A, W = EDGE_CASES["ties"]
    s = sens._sensitivity_layer(A, W)
    for i in range(W.shape[0]):
        for side in (W[i] > 0, W[i] < 0):
            if side.any():
                np.testing.assert_allclose(s[i, side], 1 / side.sum(), rtol=1e-15)


def test_sensitivity_of_a_network_matches_reference():
    for dtype in DTYPES:
        net = sp.random_mlp([9, 11, 7, 3], rng=3, dtype=dtype)
        X = np.random.default_rng(4).standard_normal((23, 9)).astype(dtype)
        got = sp.sensitivity(net, X, chunk_size=5)
        want = reference.sensitivity(net, X)
        assert len(got) == len(want) == 3
        for s, r, layer in zip(got, want, net.layers):
            assert s.dtype == np.dtype(dtype) == r.dtype
            np.testing.assert_allclose(s, r, rtol=RTOL[np.dtype(dtype)], atol=ATOL[np.dtype(dtype)])


@given(sst.networks_with_inputs(n_layers=(1, 3), widths=(1, 8), dtypes=("float64", "float32"),
                                activations=("relu", "tanh", "leaky_relu")))
def test_sensitivity_of_drawn_networks_matches_reference(net_and_X):
    net, X = net_and_X
    dt = net.dtype
    for s, r in zip(sp.sensitivity(net, X, chunk_size=3), reference.sensitivity(net, X)):
        np.testing.assert_allclose(s, r, rtol=RTOL[dt], atol=ATOL[dt])


def test_float32_stays_float32_and_is_not_upcast():
    net = sp.random_mlp([6, 5, 4], rng=0, dtype=np.float32)
    X = np.abs(np.random.default_rng(0).standard_normal((8, 6))).astype(np.float32)
    for s in sp.sensitivity(net, X):
        assert s.dtype == np.float32
    A, W = X, net.layers[0].weight
    assert sens._sensitivity_layer(A, W).dtype == np.float32
    # float64 data for a float32 network is cast to the network's dtype
    assert all(s.dtype == np.float32 for s in sp.sensitivity(net, X.astype(np.float64)))


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_reciprocals_kernel(parts):
    """r = 1/|Z| where finite, else 0, for Z = stacked @ AT; AT = I makes Z = stacked exactly."""
    Z = np.array([[2.0, -4.0, 0.0, -0.0, 1e-310, -5e-324, 1e308],
                  [1.0, 8.0, -0.5, 3.0, 0.0, 2.0, -1e308]])
    r = np.empty_like(Z)
    sens._z_reciprocals(Z, np.eye(7), r, parts)
    np.testing.assert_array_equal(r, [[0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 1e-308],
                                      [1.0, 0.125, 2.0, 1 / 3, 0.0, 0.5, 1e-308]])
    Zf = Z[:, :4].astype(np.float32)
    rf = np.empty_like(Zf)
    sens._z_reciprocals(Zf, np.eye(4, dtype=np.float32), rf, parts)
    assert rf.dtype == np.float32
    np.testing.assert_array_equal(rf, np.array([[0.5, 0.25, 0.0, 0.0], [1.0, 0.125, 2.0, 1 / 3]], np.float32))
    # an overflowing Z = inf contributes nothing either
    big = np.full((1, 2), 1e308)
    r_inf = np.empty((1, 1))
    sens._z_reciprocals(big, np.ones((2, 1)), r_inf, 1)
    assert r_inf[0, 0] == 0.0


def test_no_negative_zeros():
    A = np.array([[-0.0, 0.0, 1.0]])
    W = np.array([[1.0, -1.0, 0.0], [-0.0, 2.0, 3.0]])
    s = sens._sensitivity_layer(A, W)
    assert not np.any(np.signbit(s))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size"),
        ({"chunk_size": True}, TypeError, "chunk_size"),
        ({"tiles": {"tile_j": -3}}, ValueError, "tile_j"),
        ({"tiles": {"tile_x": 2.0}}, TypeError, "tile_x"),
        ({"tiles": {"tile_k": 4}}, ValueError, "unknown key"),
        ({"tiles": {"tile_i": 0}}, ValueError, "tile_i"),
        ({"tiles": [1, 2]}, TypeError, "tiles"),
    ],
)
def test_bad_options_are_refused(kwargs, exc, match):
    net = sp.random_mlp([3, 2], rng=0)
    with pytest.raises(exc, match=match):
        sp.sensitivity(net, np.ones((2, 3)), **kwargs)


def test_bad_network_is_refused():
    with pytest.raises(TypeError, match="network"):
        sp.sensitivity([np.ones((2, 2))], np.ones((2, 2)))


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_overflowing_forward_pass_is_refused():
    net = sp.Network([sp.Dense(np.full((3, 3), 1e200), None, "relu"), sp.Dense(np.full((2, 3), 1e200), None)])
    with pytest.raises(ValueError, match="overflow"):
        sp.sensitivity(net, np.full((2, 3), 1e200))


_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import sparsify as sp
    net = sp.random_mlp([37, 70, 19], rng=1, dtype=np.dtype(sys.argv[1]))
    X = np.random.default_rng(2).standard_normal((150, 37)).astype(sys.argv[1])
    S = sp.sensitivity(net, X, chunk_size=64, tiles={"tile_i": 4, "tile_j": 16, "tile_x": 32})
    print(hashlib.sha256(b"".join(s.tobytes() for s in S)).hexdigest())
    """
)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bit_identical_with_one_or_two_threads(dtype):
    digests = []
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, dtype], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]
    assert len(digests[0]) == 64
