"""The per-machine calibration of the serial threshold (sparsify._calibrate, sparsify._config.serial_work)."""
import json

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsify import _calibrate as C
from sparsify import _config

WORKS = [C.PROBE_POINTS * n * n for n in C.LADDER_SIDES]


def _rows(ratios, serial=1e-3):
    return [(w, serial * w / WORKS[0], serial * w / WORKS[0] * r) for w, r in zip(WORKS, ratios)]


ratios = st.lists(st.floats(0.3, 1.5), min_size=len(WORKS), max_size=len(WORKS))


@given(ratios)
def test_threshold_lies_between_the_smallest_rung_and_twice_the_largest(rs):
    t = C.threshold_of(_rows(rs))
    assert WORKS[0] <= t <= 2 * WORKS[-1]


@given(ratios, st.floats(0.3, 1.0))
def test_a_faster_parallel_run_never_raises_the_threshold(rs, factor):
    assert C.threshold_of(_rows([r * factor for r in rs])) <= C.threshold_of(_rows(rs))


@given(ratios)
def test_every_rung_above_the_threshold_gains(rs):
    t = C.threshold_of(_rows(rs))
    assert all(r <= C.GAIN for w, r in zip(WORKS, rs) if w > t)


def test_threshold_at_the_ends_and_between_two_rungs():
    assert C.threshold_of(_rows([0.5] * 5)) == WORKS[0]
    assert C.threshold_of(_rows([0.9, 0.8, 0.75, 0.72, 0.71])) == 2 * WORKS[-1]
    # a gain below a rung without one does not count: 0.9 -> 0.5 crosses 0.7 halfway to rung 3
    assert C.threshold_of(_rows([0.5, 0.5, 0.9, 0.5, 0.5])) == pytest.approx(np.sqrt(WORKS[2] * WORKS[3]), rel=1e-6)
    # the ratio crosses GAIN halfway (0.8 -> 0.6) between rungs 2 and 3: the geometric midpoint
    t = C.threshold_of(_rows([0.9, 0.85, 0.8, 0.6, 0.55]))
    assert t == pytest.approx(np.sqrt(WORKS[2] * WORKS[3]), rel=1e-6)


FAKE = {"float64": _rows([0.9, 0.8, 0.6, 0.5, 0.5]), "float32": _rows([0.9, 0.9, 0.8, 0.6, 0.5])}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_DIR_ENV, str(tmp_path / "cache"))
    calls = []

    def fake_measure(repeats=C.REPEATS):
        calls.append(1)
        return FAKE

    monkeypatch.setattr(C, "measure", fake_measure)
    return tmp_path / "cache", calls


def test_calibration_is_measured_once_then_read_from_its_cache(cache):
    folder, calls = cache
    first = C.calibrate()
    assert calls == [1]
    assert first["threshold"] == {d: C.threshold_of(r) for d, r in FAKE.items()}
    assert first["path"] == str(C.cache_path()) and (folder / C.cache_path().name).is_file()
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]  # written whole, renamed into place
    again = C.calibrate()
    assert calls == [1] and again["threshold"] == first["threshold"]
    C.calibrate(force=True)
    assert calls == [1, 1]


@pytest.mark.parametrize("content", ["{not json", json.dumps({"key": "other", "threshold": {}}),
                                     json.dumps({"threshold": {"float64": -5, "float32": 3}})])
def test_a_corrupt_or_foreign_cache_is_measured_again(cache, content):
    folder, calls = cache
    path = C.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    got = C.calibrate()
    assert calls == [1] and got["threshold"]["float64"] == C.threshold_of(FAKE["float64"])
    assert json.loads(path.read_text())["threshold"] == got["threshold"]  # and the cache repaired


def test_a_cache_that_cannot_be_written_only_means_measuring_again(tmp_path, monkeypatch, cache):
    _, calls = cache
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(C.CACHE_DIR_ENV, str(blocker / "sub"))  # a folder below a regular file
    assert C.calibrate()["threshold"]["float32"] == C.threshold_of(FAKE["float32"])
    C.calibrate()
    assert calls == [1, 1]


def test_the_key_changes_with_what_the_threshold_depends_on(monkeypatch):
    key = C.machine_key()
    assert key["threads"] == numba.config.NUMBA_NUM_THREADS and key["vector_bytes"] == _config.vector_bytes()
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", key["threads"] + 3)
    assert C.cache_path() != C.cache_path(key)


def test_serial_work_follows_the_override_else_the_calibration(cache, monkeypatch):
    monkeypatch.setattr(_config, "_serial_work_cache", {})
    monkeypatch.setenv(_config.SERIAL_WORK_ENV, "12345")
    assert _config.serial_work(np.float32) == 12345
    monkeypatch.setenv(_config.SERIAL_WORK_ENV, "auto")
    if numba.config.DISABLE_JIT or numba.config.NUMBA_NUM_THREADS <= 1:
        assert _config.serial_work(np.float32) == _config.SERIAL_WORK
    else:
        assert _config.serial_work(np.float64) == C.threshold_of(FAKE["float64"])
        assert _config.serial_work(np.float32) == C.threshold_of(FAKE["float32"])
    monkeypatch.setenv(_config.SERIAL_WORK_ENV, "many")
    with pytest.raises(ValueError, match="SPARSIFY_SERIAL_WORK.*auto"):
        _config.serial_work()


def test_a_real_measurement_covers_the_ladder_for_both_dtypes():
    if numba.config.DISABLE_JIT:
        pytest.skip("the kernels' Python twins say nothing about the machine")
    threads = numba.get_num_threads()
    rows = C.measure(repeats=2)
    assert set(rows) == {"float64", "float32"}
    for r in rows.values():
        assert [w for w, _, _ in r] == WORKS
        assert all(s > 0 and p > 0 for _, s, p in r)
    assert numba.get_num_threads() == threads and not _config._calibrating  # both restored
