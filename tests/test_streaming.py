"""S given as batches: lists, generators, memory-mapped .npy files.

For a fixed chunk size the result must be bit-identical to passing all of S
at once, however S is split; empty S and non-finite values are refused with a
message naming X_S.
"""
import importlib

import numpy as np
import pytest

import sparsify as sp
from sparsify import reference
from sparsify._config import ATOL, RTOL

sens = importlib.import_module("sparsify.sensitivity")


def _net_and_data(dtype=np.float64, n=61, signed=True):
    net = sp.random_mlp([13, 17, 9, 4], rng=5, dtype=dtype)
    X = np.random.default_rng(6).standard_normal((n, 13)).astype(dtype)
    return net, (X if signed else np.abs(X))


def _split(X, sizes):
    edges = np.cumsum([0] + list(sizes))
    assert edges[-1] == X.shape[0]
    return [X[a:b] for a, b in zip(edges[:-1], edges[1:])]


def assert_same_bits(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
        assert g.tobytes() == w.tobytes()


UNEVEN = [(61,), (1, 60), (3, 17, 1, 29, 11), (8, 8, 8, 8, 8, 8, 8, 5), (0, 30, 0, 31), (60, 1), (1,) * 61]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("sizes", UNEVEN, ids=lambda s: "-".join(map(str, s))[:30])
def test_list_of_batches_is_bit_identical_to_all_at_once(sizes, dtype):
    net, X = _net_and_data(dtype)
    whole = sp.sensitivity(net, X, chunk_size=8)
    assert_same_bits(sp.sensitivity(net, _split(X, sizes), chunk_size=8), whole)
    assert_same_bits(sp.sensitivity(net, tuple(_split(X, sizes)), chunk_size=8), whole)
    # and it is the sensitivity: compare with the reference (which splits inputs globally)
    for s, r in zip(whole, reference.sensitivity(net, X)):
        np.testing.assert_allclose(s, r, rtol=RTOL[np.dtype(dtype)], atol=ATOL[np.dtype(dtype)])


def test_generator_is_bit_identical_to_all_at_once():
    net, X = _net_and_data()
    whole = sp.sensitivity(net, X, chunk_size=8)
    gen = (b for b in _split(X, (5, 20, 3, 33)))
    assert_same_bits(sp.sensitivity(net, gen, chunk_size=8), whole)
    assert_same_bits(sp.sensitivity(net, iter(_split(X, (61,))), chunk_size=8), whole)


def test_default_chunk_size_with_uneven_splits():
    net, X = _net_and_data(n=1300)
    whole = sp.sensitivity(net, X)
    assert_same_bits(sp.sensitivity(net, _split(X, (100, 700, 1, 499))), whole)
    assert_same_bits(sp.sensitivity(net, _split(X, (511, 2, 511, 276))), whole)


def test_memory_mapped_npy(tmp_path):
    net, X = _net_and_data(n=61)
    path = tmp_path / "S.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    whole = sp.sensitivity(net, X, chunk_size=8)
    assert_same_bits(sp.sensitivity(net, mm, chunk_size=8), whole)
    # float32 on disk, float64 network: cast block by block, same bits as casting up front
    np.save(path, X.astype(np.float32))
    mm32 = np.load(path, mmap_mode="r")
    assert_same_bits(sp.sensitivity(net, mm32, chunk_size=8), sp.sensitivity(net, X.astype(np.float32), chunk_size=8))


def test_nested_lists_of_numbers_are_one_array():
    net, X = _net_and_data(n=6)
    assert_same_bits(sp.sensitivity(net, X.tolist()), sp.sensitivity(net, X))


def test_float32_network_stays_float32_when_streaming():
    net, X = _net_and_data(np.float32)
    out = sp.sensitivity(net, (b.astype(np.float64) for b in _split(X, (30, 31))), chunk_size=8)
    assert all(s.dtype == np.float32 for s in out)
    assert_same_bits(out, sp.sensitivity(net, X, chunk_size=8))


# --- the sign split decided per block -------------------------------------------
def test_sign_split_per_block_equals_global_split():
    """Blocks without a negative entry are not split; the maxima are those of the global split.

    Splitting a nonnegative point gives the point plus an all-zero row, and an
    all-zero row has g = 0 everywhere, so it cannot change a maximum.
    """
    rng = np.random.default_rng(11)
    W = rng.standard_normal((6, 8))
    A = np.abs(rng.standard_normal((20, 8)))
    A[12:16] *= np.where(rng.random((4, 8)) < 0.5, -1, 1)  # only the block of rows 12..15 is signed
    s = sens._sensitivity_layer(A, W, chunk_size=4)
    np.testing.assert_allclose(s, reference.sensitivity_layer(A, W), rtol=RTOL[A.dtype], atol=ATOL[A.dtype])
    # forcing the split of every block (point + zero row) changes no bit
    acc = sens._LayerMaxima(W, sens.DEFAULT_TILES)
    for start in range(0, 20, 4):
        block = A[start:start + 4]
        acc._update_part(block, +1)  # max(block, 0)
        acc._update_part(block, -1)  # max(-block, 0)
    assert acc.result().tobytes() == s.tobytes()


def test_zero_rows_change_no_bit():
    rng = np.random.default_rng(12)
    W = rng.standard_normal((5, 7))
    A = np.abs(rng.standard_normal((9, 7)))
    s = sens._sensitivity_layer(A, W, chunk_size=4)
    padded = np.vstack([A, np.zeros((6, 7))])
    assert sens._sensitivity_layer(padded, W, chunk_size=4).tobytes() == s.tobytes()


# --- refusals ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "empty",
    [[], (), iter([]), (b for b in []), np.empty((0, 13)), [np.empty((0, 13))], [np.empty((0, 13))] * 3],
    ids=["list", "tuple", "iterator", "generator", "array", "one-empty-batch", "empty-batches"],
)
def test_empty_S_is_refused(empty):
    net, _ = _net_and_data()
    with pytest.raises(ValueError, match="X_S"):
        sp.sensitivity(net, empty)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_value_in_third_batch_is_refused(bad):
    net, X = _net_and_data()
    batches = _split(X, (10, 10, 10, 31))
    batches[2] = batches[2].copy()
    batches[2][3, 4] = bad
    with pytest.raises(ValueError, match=r"X_S batch 2.*NaN or infinite"):
        sp.sensitivity(net, batches)
    with pytest.raises(ValueError, match=r"X_S batch 2"):
        sp.sensitivity(net, iter(batches))


def test_non_finite_value_in_an_array_names_its_rows():
    net, X = _net_and_data(n=40)
    X = X.copy()
    X[25, 0] = np.nan
    with pytest.raises(ValueError, match=r"X_S\[24:32\].*NaN"):
        sp.sensitivity(net, X, chunk_size=8)
    with pytest.raises(ValueError, match=r"X_S: .*NaN"):
        sp.sensitivity(net, X)


@pytest.mark.parametrize(
    "batch, match",
    [
        (np.ones((3, 12)), r"X_S batch 1: has 12 features"),
        (np.ones(13), r"X_S batch 1: expected shape \(n_points, 13\)"),
        (np.ones((2, 3, 13)), r"X_S batch 1: expected shape"),
    ],
)
def test_batch_shape_is_checked(batch, match):
    net, X = _net_and_data()
    with pytest.raises(ValueError, match=match):
        sp.sensitivity(net, iter([X[:5], batch]))


def test_wrong_array_shape_is_refused():
    net, X = _net_and_data()
    with pytest.raises(ValueError, match=r"X_S: has 12 features.*shape \(%d, 12\)" % X.shape[0]):
        sp.sensitivity(net, X[:, :12])
    with pytest.raises(ValueError, match="X_S"):
        sp.sensitivity(net, X[0])


@pytest.mark.parametrize("bad", ["S.npy", b"abc", 3, {"a": 1}, None])
def test_wrong_type_is_refused(bad):
    net, _ = _net_and_data()
    with pytest.raises(TypeError, match="X_S"):
        sp.sensitivity(net, bad)


def test_complex_batch_is_refused():
    net, X = _net_and_data()
    with pytest.raises(TypeError, match="X_S batch 0"):
        sp.sensitivity(net, [X.astype(complex)])


@pytest.mark.parametrize("method", ["det", "rand", "hybrid"])
def test_prune_streams_S_bit_for_bit(tmp_path, method):
    """prune reads S once, as a generator, a list of batches or a memory map, and gives the
    same bits and the same report as with the whole array."""
    net, X = _net_and_data()
    whole = sp.prune(net, X, keep=0.3, method=method, rng=4, delta=0.5, C=1.0)
    np.save(tmp_path / "S.npy", X)
    variants = {
        "generator": (X[i:i + 7] for i in range(0, X.shape[0], 7)),
        "list": [X[:11], X[11:12], X[12:]],
        "memmap": np.load(tmp_path / "S.npy", mmap_mode="r"),
    }
    for name, S in variants.items():
        res = sp.prune(net, S, keep=0.3, method=method, rng=4, delta=0.5, C=1.0)
        for a, b in zip(whole.network.weights, res.network.weights):
            assert a.tobytes() == b.tobytes(), name
        assert res.report.n_points == X.shape[0], name
        for ra, rb in zip(whole.report.layers, res.report.layers):
            assert ra == rb, name
