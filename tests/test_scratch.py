"""The per-thread scratch pool of the sensitivity step (sparsify._scratch)."""
import threading

import numpy as np
import pytest

import sparsify as sp
from sparsify import _scratch
from sparsify.sensitivity import _LayerMaxima, DEFAULT_TILES

BIG = (512, 512)  # 2 MiB of float64: pooled


@pytest.fixture(autouse=True)
def empty_pool():
    _scratch.clear()
    yield
    _scratch.clear()


def test_a_returned_array_serves_the_next_take_of_its_shape_and_dtype():
    a = _scratch.take(BIG, np.float64)
    assert a.shape == BIG and a.dtype == np.float64 and a.flags.c_contiguous
    _scratch.give_back(a)
    assert _scratch.take(BIG, np.float32) is not a  # another dtype
    assert _scratch.take(BIG, np.float64) is a
    assert _scratch.take(BIG, np.float64) is not a  # taken once only


def test_small_arrays_and_views_are_not_pooled():
    small = _scratch.take((10, 10), np.float64)
    big = _scratch.take(BIG, np.float64)
    _scratch.give_back(small, big[:256], None)
    assert _scratch.pooled_bytes() == 0


def test_the_pool_keeps_at_most_its_limit_dropping_the_oldest(monkeypatch):
    monkeypatch.setattr(_scratch, "POOL_BYTES", 5 << 20)
    arrays = [np.empty(BIG) for _ in range(3)]  # 2 MiB each
    _scratch.give_back(*arrays)
    assert _scratch.pooled_bytes() == 4 << 20
    assert _scratch.take(BIG, np.float64) is arrays[2]  # the newest first
    assert _scratch.take(BIG, np.float64) is arrays[1]
    assert _scratch.take(BIG, np.float64) is not arrays[0]  # dropped


def test_the_pool_belongs_to_its_thread():
    a = np.empty(BIG)
    _scratch.give_back(a)
    seen = []
    t = threading.Thread(target=lambda: seen.append(_scratch.take(BIG, np.float64)))
    t.start()
    t.join()
    assert seen[0] is not a and _scratch.take(BIG, np.float64) is a


def test_a_layer_returns_its_working_arrays_once():
    W = np.random.default_rng(0).standard_normal((300, 400))
    acc = _LayerMaxima(W, DEFAULT_TILES)
    acc.update(np.abs(np.random.default_rng(1).standard_normal((64, 400))))
    acc.result()
    assert _scratch.pooled_bytes() > 0
    with pytest.raises(RuntimeError, match="already called"):
        acc.result()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reused_scratch_gives_the_same_bits_as_fresh_arrays(dtype):
    # a first call leaves its arrays, full of its own values, in the pool; a second call of the
    # same shapes on other data must not see them
    rng = np.random.default_rng(3)
    net = sp.random_mlp([700, 600, 10], rng=2, dtype=dtype)
    X1 = rng.standard_normal((300, 700)).astype(dtype)
    X2 = np.abs(rng.standard_normal((300, 700))).astype(dtype)
    fresh = sp.sensitivity(net, X2)
    _scratch.clear()
    sp.sensitivity(net, X1)
    assert _scratch.pooled_bytes() > 0
    again = sp.sensitivity(net, X2)
    for a, b in zip(fresh, again):
        assert a.tobytes() == b.tobytes()
