"""Dask: sensitivities of a dask array, verify seeds as tasks, failures (sparsify.distributed).

One LocalCluster of two single-threaded worker processes serves the whole module.
Every result computed on it must equal the in-process result bit for bit.
"""
import io
import json
import os
import sys

import numpy as np
import pytest

import sparsify as sp
from sparsify import distributed as D
from sparsify.sensitivity import sensitivity_and_head
from sparsify import verify as V
from sparsify.cli import main

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with D.local_cluster(2, dashboard_address=":0") as cluster:
        # not the default client, so that dask=None really means "no cluster"
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


def _bits_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), f"max |diff| {np.max(np.abs(x - y))}"


def _signed_data(n, d, dtype, seed=1):
    X = np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)
    X[: n // 3] = np.abs(X[: n // 3])  # some blocks nonnegative, others sign-split
    return X


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sensitivity_of_a_dask_array_equals_in_memory(client, dtype):
    net = sp.random_mlp([24, 40, 30, 6], rng=3, dtype=dtype)
    X = _signed_data(1500, 24, dtype)
    Xd = da.from_array(X, chunks=(333, 24))  # chunks not aligned to the blocks
    expected = sp.sensitivity(net, X, chunk_size=32)
    _bits_equal(sp.sensitivity(net, Xd, chunk_size=32, dask=client), expected)
    # no client: the chunks one after the other in this process
    _bits_equal(sp.sensitivity(net, Xd, chunk_size=32), expected)
    # an in-memory array sent to the cluster with dask=
    _bits_equal(sp.sensitivity(net, X, chunk_size=32, dask=client), expected)


def test_head_blocks_come_from_the_first_task(client):
    net = sp.random_mlp([10, 20, 4], rng=0)
    X = _signed_data(1000, 10, np.float64)
    Xd = da.from_array(X, chunks=(100, 10))  # tasks of 16 blocks of 16 points, the first one grown to hold 600
    s0, n0, h0 = sensitivity_and_head(net, X, 600, chunk_size=16)
    s1, n1, h1 = D.sensitivity_and_head(net, Xd, 600, chunk_size=16, tiles=None, dask=client)
    _bits_equal(s1, s0)
    assert n1 == n0 == 1000
    for layer0, layer1 in zip(h0, h1):
        assert len(layer0) == len(layer1) >= 600 // 16
        for b0, b1 in zip(layer0, layer1):
            assert b0.points == b1.points
            _bits_equal([b0.AT, b0.Z], [b1.AT, b1.Z])


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_sensitivity_of_a_convolution_on_dask_equals_in_memory(client, reduction):
    g = np.random.default_rng(4)
    net = sp.Network([sp.Conv2d(g.standard_normal((3, 2, 3, 3)), g.standard_normal(3), "relu", 1, 1),
                      sp.Flatten(), sp.Dense(g.standard_normal((4, 3 * 6 * 6)))], input_shape=(2, 6, 6))
    X = g.standard_normal((700, 2, 6, 6))
    expected = sp.sensitivity(net, X, patch_reduction=reduction, chunk_size=32)
    got = sp.sensitivity(net, da.from_array(X, chunks=(150, 2, 6, 6)), patch_reduction=reduction, chunk_size=32,
                         dask=client)
    _bits_equal(got, expected)


def test_prune_with_a_dask_array_equals_in_memory(client):
    net = sp.random_mlp([16, 32, 24, 5], rng=1)
    X = _signed_data(5000, 16, np.float64)  # more than REPORT_POINTS, over several tasks
    a = sp.prune(net, X, keep=0.2, method="hybrid", rng=7)
    b = sp.prune(net, da.from_array(X, chunks=(1000, 16)), keep=0.2, method="hybrid", rng=7, dask=client)
    _bits_equal(b.network.weights, a.network.weights)
    _bits_equal(b.sensitivities, a.sensitivities)
    ra, rb = a.report.__dict__.copy(), b.report.__dict__.copy()
    ra.pop("seconds"), rb.pop("seconds")
    assert json.dumps(V.json_ready(ra)) == json.dumps(V.json_ready(rb))


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")
def test_a_local_cluster_is_started_and_closed_for_the_call():
    net = sp.random_mlp([6, 8, 3], rng=0)
    X = _signed_data(300, 6, np.float64)
    got = sp.sensitivity(net, da.from_array(X, chunks=(100, 6)), chunk_size=16, dask="local:1")
    _bits_equal(got, sp.sensitivity(net, X, chunk_size=16))
    assert D.current_client() is None  # nothing left behind


def test_sensitivity_errors_name_the_rows_of_S(client):
    net = sp.random_mlp([4, 5, 2], rng=0)
    X = np.ones((3000, 4))
    X[2100, 1] = np.nan
    with pytest.raises(ValueError, match="X_S rows 2048:3000"):
        sp.sensitivity(net, da.from_array(X, chunks=(1000, 4)), chunk_size=128, dask=client)
    with pytest.raises(ValueError, match="empty"):
        sp.sensitivity(net, da.zeros((0, 4), chunks=(10, 4)), dask=client)
    with pytest.raises(ValueError, match=r"expected shape \(n_points, 4\)"):
        sp.sensitivity(net, da.zeros((10, 5), chunks=(10, 5)), dask=client)
    with pytest.raises(TypeError, match="dask array or a NumPy array"):
        sp.sensitivity(net, [X[:10], X[10:20]], dask=client)


@pytest.fixture(scope="module")
def small():
    net = sp.random_mlp([12, 16, 3], rng=5)
    g = np.random.default_rng(2)
    return net, np.abs(g.standard_normal((60, 12))), np.abs(g.standard_normal((40, 12)))


def test_verify_seeds_as_tasks_equal_serial(client, small):
    net, X_S, X_T = small
    opts = dict(keep=0.3, method="rand", seeds=6, first_seed=3, delta=0.2)
    serial = V.verify(net, X_S, X_T, **opts)
    seen = []
    tasks = V.verify(net, X_S, X_T, **opts, dask=client, progress=lambda d, t: seen.append((d, t)))
    assert json.dumps(V.json_ready(tasks)) == json.dumps(V.json_ready(serial))
    assert seen[-1] == (6, 6) and len(seen) == 6
    a = V.sweep(net, X_S, (0.2, 0.5), ("det", "rand"), seed=1)
    b = V.sweep(net, X_S, (0.2, 0.5), ("det", "rand"), seed=1, dask=client)
    for method in a:
        for key in a[method]:
            np.testing.assert_array_equal(b[method][key], a[method][key])


def test_verify_command_with_a_scheduler_address(client, small, tmp_path):
    net, X_S, X_T = small
    sp.save(net, tmp_path / "m.npz")
    np.save(tmp_path / "S.npy", X_S)
    np.save(tmp_path / "T.npy", X_T)
    base = ["verify", str(tmp_path / "m.npz"), "--data", str(tmp_path / "S.npy"), "--test", str(tmp_path / "T.npy"),
            "--seeds", "4", "--method", "rand", "--quiet"]
    main(base + ["--json", str(tmp_path / "serial.json")])
    main(base + ["--json", str(tmp_path / "tasks.json"), "--dask", client.scheduler.address])
    assert (tmp_path / "serial.json").read_bytes() == (tmp_path / "tasks.json").read_bytes()
    assert main(base + ["--dask", "local:0"]) == 2


def test_experiment_config_refuses_a_bad_dask():
    with pytest.raises(ValueError, match="dask: 'local:N' needs a positive"):
        _experiment_config(dask="local:0")
    with pytest.raises(TypeError, match="dask: must be 'local'"):
        _experiment_config(dask=2)


@pytest.mark.parametrize("spec, error, match", [
    ("local:0", ValueError, "positive whole number"), ("local:x", ValueError, "positive whole number"),
    ("somewhere", ValueError, "scheduler address"), ("", ValueError, "scheduler address"),
    (4, TypeError, "got int"),
])
def test_check_dask_refuses(spec, error, match):
    with pytest.raises(error, match=match):
        D.check_dask(spec)


def test_check_dask_accepts():
    assert D.check_dask(None) is None
    assert D.check_dask("local:3") == ("local", 3)
    assert D.check_dask("local") == ("local", D.usable_cores())
    assert D.check_dask("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"sparsify\[dask\]"):
        D.check_dask(object())
    net = sp.random_mlp([3, 2], rng=0)
    with pytest.raises(ImportError, match=r"sparsify\[dask\]"):
        sp.sensitivity(net, np.ones((4, 3)), dask="local:1")


def _fails_on_odd(shared, item):
    if item % 2:
        raise RuntimeError(f"odd item {item} with {shared}")
    return item * shared


def test_run_tasks_reports_failures_with_the_workers_traceback(client):
    got = dict(D.run_tasks(client, _fails_on_odd, 10, range(5)))
    assert {i: got[i] for i in (0, 2, 4)} == {0: 0, 2: 20, 4: 40}
    for i in (1, 3):
        assert isinstance(got[i], D.TaskFailure) and got[i].index == i
        assert isinstance(got[i].error, RuntimeError)
        assert "_fails_on_odd" in got[i].traceback and f"odd item {i}" in got[i].traceback
    with pytest.raises(RuntimeError, match="odd item 1"):
        list(D.run_ordered(client, _fails_on_odd, 10, range(5)))


# --- the experiment: every cell a task ----------------------------------------------------
def _experiment_config(**overrides):
    from sparsify import experiment as E

    values = dict(data="generated", hidden=[10], epochs=2, retrain_epochs=1, milestones=[], retrain_milestones=[],
                  methods=["sipp-hybrid", "magnitude-global", "snip"], keeps=[0.5, 0.2], seeds=[0, 1],
                  s_size=16, lottery=True, lottery_keeps=[0.2])
    values.update(overrides)
    return E.ExperimentConfig.from_dict(values)


def _comparable(rows):
    """Rows without the measured seconds (NaN written as text so that equal rows compare equal)."""
    return [{k: repr(v) if isinstance(v, float) else v for k, v in r.items() if not k.endswith("seconds")}
            for r in rows]


class _StopAfter:
    """A log that interrupts the client (KeyboardInterrupt) after ``n`` progress lines."""

    def __init__(self, n):
        self.n, self.lines = n, 0

    def write(self, text):
        self.lines += text.startswith("[")
        if self.lines > self.n:
            raise KeyboardInterrupt

    def flush(self):
        pass


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    from sparsify import experiment as E

    out = tmp_path_factory.mktemp("serial")
    return E.run_experiment(_experiment_config(), out, log=io.StringIO(), plots=False)


def test_experiment_on_dask_equals_serial_and_resumes_after_an_interrupted_client(client, serial_run, tmp_path):
    from sparsify import experiment as E

    cfg = _experiment_config()
    with pytest.raises(KeyboardInterrupt):
        E.run_experiment(cfg, tmp_path, log=_StopAfter(5), plots=False, dask=client)
    partial = E.read_results_csv(tmp_path / "results.csv")
    assert 5 <= len(partial) < len(serial_run.rows)  # a whole row per finished cell, nothing half
    log = io.StringIO()
    resumed = E.run_experiment(cfg, tmp_path, log=log, plots=False, dask=client)
    assert _comparable(resumed.rows) == _comparable(serial_run.rows)
    assert resumed.summary == serial_run.summary
    assert f"[{len(serial_run.rows):4d}/{len(serial_run.rows)}]" in log.getvalue()  # progress counts cells
    # and a serial resume of a finished distributed run has nothing left to do
    again = E.run_experiment(cfg, tmp_path, log=io.StringIO(), plots=False)
    assert _comparable(again.rows) == _comparable(serial_run.rows)


@pytest.mark.parametrize("mode", ["iterative", "during"])
def test_experiment_cascades_and_during_cells_as_tasks_equal_serial(client, tmp_path, mode):
    from sparsify import experiment as E

    opts = dict(mode=mode, methods=["sipp-det"], lottery=False, seeds=[0], epochs=3)
    cfg = _experiment_config(**opts)
    a = E.run_experiment(cfg, tmp_path / "serial", log=io.StringIO(), plots=False)
    on_dask = _experiment_config(**opts, dask=client.scheduler.address)  # the config's dask, not a setting:
    assert on_dask.to_dict() == cfg.to_dict()  # config.json is the same, so either resumes the other
    b = E.run_experiment(on_dask, tmp_path / "dask", log=io.StringIO(), plots=False)
    assert _comparable(b.rows) == _comparable(a.rows)
    assert sorted(p.name for p in (tmp_path / "dask" / "networks").iterdir()) == \
        sorted(p.name for p in (tmp_path / "serial" / "networks").iterdir())


def _break_snip(broken: bool):
    """On a worker: make every pruning with "snip" raise (or undo that)."""
    from sparsify.experiment import run

    if broken and not hasattr(run, "_real_prune_with"):
        run._real_prune_with = run.prune_with

        def prune_with(method, *args, **kwargs):
            if method == "snip":
                raise RuntimeError("snip is broken on this worker")
            return run._real_prune_with(method, *args, **kwargs)

        run.prune_with = prune_with
    elif not broken and hasattr(run, "_real_prune_with"):
        run.prune_with = run._real_prune_with
        del run._real_prune_with


def test_failed_cells_are_named_with_the_traceback_and_the_run_goes_on(client, tmp_path, capsys):
    from sparsify import experiment as E

    cfg = _experiment_config(lottery=False, seeds=[0])
    client.run(_break_snip, True)
    try:
        code = main(["experiment", "--out", str(tmp_path), "--data", "generated", "--hidden", "10", "--epochs", "2",
                     "--retrain-epochs", "1", "--milestones", "", "--retrain-milestones", "",
                     "--methods", "sipp-hybrid,snip", "--keeps", "0.5,0.2", "--seeds", "0", "--s-size", "16",
                     "--no-lottery", "--no-plots", "--dask", client.scheduler.address])
    finally:
        client.run(_break_snip, False)
    err = capsys.readouterr().err
    assert code == 1
    assert "2 unit(s) failed" in err and "cell (retrain, snip, keep 0.5, seed 0)" in err
    assert "snip is broken on this worker" in err and "Traceback" in err
    rows = E.read_results_csv(tmp_path / "results.csv")
    assert sorted((r["method"], r["keep"]) for r in rows) == [("dense", 1.0), ("sipp-hybrid", 0.2),
                                                             ("sipp-hybrid", 0.5)]
    del cfg


def _exit_once(block, marker):
    """Kill the worker process the first time any block is computed (a crash mid-task)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return block
    os.close(fd)
    os._exit(1)


def test_references_are_spread_and_cells_placed_by_load(client, tmp_path):
    # Each seed's reference goes to its own worker and the seed's cells are not queued next to the
    # one copy of its network: with 2 seeds on 2 workers both workers train a reference and both
    # run cells.
    from sparsify import experiment as E

    cfg = _experiment_config(lottery=False, seeds=[0, 1], hidden=[64], epochs=20)
    with distributed.get_task_stream(client) as ts:
        E.run_experiment(cfg, tmp_path, log=io.StringIO(), plots=False, dask=client)
    where = {}
    for task in ts.data:
        kind = task["key"].split("-")[2]
        where.setdefault(kind, []).append(task["worker"])
    assert len(where["reference"]) == 2 and len(set(where["reference"])) == 2
    assert len(set(where["cell"])) == 2



def test_no_known_workers_at_submission_means_no_placement_hint(client, serial_run, tmp_path, monkeypatch):
    # A scheduler may have no worker yet when the run starts (they join later): the references are
    # then submitted without a hint (Dask refuses allow_other_workers without workers) and the run
    # still equals the serial one.
    from sparsify import experiment as E

    monkeypatch.setattr(D, "thread_plan", lambda c: {})
    got = E.run_experiment(_experiment_config(), tmp_path, log=io.StringIO(), plots=False, dask=client)
    assert _comparable(got.rows) == _comparable(serial_run.rows)

def test_a_worker_dying_mid_task_is_retried(client, tmp_path):
    """Last in the module: the nanny restarts the dead worker; the task runs again elsewhere."""
    net = sp.random_mlp([8, 12, 3], rng=2)
    X = _signed_data(2000, 8, np.float64)
    Xd = da.from_array(X, chunks=(500, 8)).map_blocks(_exit_once, str(tmp_path / "died"), dtype=X.dtype,
                                                      meta=np.empty((0, 0), X.dtype))
    got = sp.sensitivity(net, Xd, chunk_size=64, dask=client)
    assert (tmp_path / "died").exists()  # a worker did die
    _bits_equal(got, sp.sensitivity(net, X, chunk_size=64))


def test_local_clusters_run_without_the_workers_profiler_even_after_a_restart(client):
    # The statistical profiler samples every thread's stack each 10 ms, holding the GIL. This runs
    # after a worker was killed and restarted by its nanny (the test above), which must keep it off.
    import dask

    client.wait_for_workers(2, timeout=60)
    enabled = client.run(dask.config.get, "distributed.worker.profile.enabled")
    assert len(enabled) == 2 and set(enabled.values()) == {False}
