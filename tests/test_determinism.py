"""Same seed, same bits: across calls, across ways of passing the seed, and
across Numba thread counts (same seed, same bits)."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import sparsify as sp

METHODS = ["det", "rand", "hybrid"]
ALLOCATIONS = ["global", "balanced"]
# delta = 0.5 and C = 1 make hybrid sample some sides, so every method uses randomness here
OPTS = dict(delta=0.5, C=1.0)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    net = sp.random_mlp([64, 100, 30, 10], rng=rng)
    return net, rng.standard_normal((60, 64))


def _bits(res):
    return [w.tobytes() for w in res.network.weights]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("allocation", ALLOCATIONS)
def test_same_seed_same_bits(problem, method, allocation):
    net, X = problem
    a = sp.prune(net, X, keep=0.2, method=method, allocation=allocation, rng=11, **OPTS)
    b = sp.prune(net, X, keep=0.2, method=method, allocation=allocation, rng=11, **OPTS)
    assert _bits(a) == _bits(b)
    if method != "det":
        assert a.report.sampled_sides > 0  # randomness was really used
    for ta, tb in zip(a.sides, b.sides):
        np.testing.assert_array_equal(ta.draws, tb.draws)
        np.testing.assert_array_equal(ta.sampled, tb.sampled)
    assert a.report.to_dict()["layers"] == b.report.to_dict()["layers"]


@pytest.mark.parametrize("allocation", ALLOCATIONS)
def test_different_seeds_differ_for_rand(problem, allocation):
    net, X = problem
    results = [_bits(sp.prune(net, X, keep=0.2, method="rand", allocation=allocation, rng=seed, **OPTS))
               for seed in (0, 1, 2)]
    assert results[0] != results[1] and results[1] != results[2] and results[0] != results[2]


def test_det_does_not_depend_on_the_seed(problem):
    net, X = problem
    assert _bits(sp.prune(net, X, keep=0.2, method="det", rng=0)) == \
        _bits(sp.prune(net, X, keep=0.2, method="det", rng=12345))


@pytest.mark.parametrize("method", METHODS)
def test_int_seed_equals_a_generator_from_it(problem, method):
    net, X = problem
    a = sp.prune(net, X, keep=0.2, method=method, rng=5, **OPTS)
    b = sp.prune(net, X, keep=0.2, method=method, rng=np.random.default_rng(5), **OPTS)
    c = sp.prune(net, X, keep=0.2, method=method, rng=np.int64(5), **OPTS)
    assert _bits(a) == _bits(b) == _bits(c)


def test_a_passed_generator_is_consumed(problem):
    net, X = problem
    g = np.random.default_rng(5)
    first = _bits(sp.prune(net, X, keep=0.2, method="rand", rng=g, **OPTS))
    second = _bits(sp.prune(net, X, keep=0.2, method="rand", rng=g, **OPTS))
    assert first != second  # the caller's stream moves on, as with any numpy consumer


_SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import numba
import sparsify as sp

rng = np.random.default_rng(0)
net = sp.random_mlp([64, 300, 100, 10], rng=rng)
X = rng.standard_normal((152, 64))
out = {"threads": numba.config.NUMBA_NUM_THREADS}
h = hashlib.sha256()
for s in sp.sensitivity(net, X):
    h.update(s.tobytes())
out["sensitivity"] = h.hexdigest()
for method in ("det", "rand", "hybrid"):
    for allocation in ("global", "balanced"):
        res = sp.prune(net, X, keep=0.1, method=method, allocation=allocation, rng=3, delta=0.5, C=1.0)
        h = hashlib.sha256()
        for w in res.network.weights:
            h.update(w.tobytes())
        out[method + "-" + allocation] = h.hexdigest()
print(json.dumps(out))
"""


def _run_with_threads(n):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(n))
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_identical_bits_with_one_and_two_numba_threads():
    one, two = _run_with_threads(1), _run_with_threads(2)
    assert one.pop("threads") == 1 and two.pop("threads") == 2
    assert one == two
    # and this process (default threads) agrees too
    rng = np.random.default_rng(0)
    net = sp.random_mlp([64, 300, 100, 10], rng=rng)
    X = rng.standard_normal((152, 64))
    res = sp.prune(net, X, keep=0.1, method="rand", allocation="balanced", rng=3, delta=0.5, C=1.0)
    h = hashlib.sha256()
    for w in res.network.weights:
        h.update(w.tobytes())
    assert h.hexdigest() == one["rand-balanced"]
