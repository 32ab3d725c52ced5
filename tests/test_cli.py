"""The command line, run in-process through ``sparsify.cli.main`` (plus one run
of the installed executable): outputs, help, and one-line errors that leave
no files behind."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparsify as sp
from sparsify.cli import build_parser, main

LAYER_KEYS = {"layer", "shape", "patches", "activation", "kept", "total", "kept_with_bias", "total_with_bias", "keep",
              "live_sides", "dead_sides", "sampled_sides", "det_sides", "full_sides", "empty_sides",
              "eps_max", "eps_mean", "err_max", "err_mean", "excluded"}
REPORT_KEYS = {"method", "allocation", "requested", "achieved", "total", "total_biases", "n_points", "delta",
               "C", "seconds", "layers", "keep_requested", "keep_achieved", "kept_with_bias",
               "total_with_bias", "dead_sides", "sampled_sides", "model", "data", "seed", "out", "excluded",
               "layer_keep", "pruned_total"}


@pytest.fixture
def files(tmp_path):
    net = sp.random_mlp([6, 10, 3], rng=0)
    X = np.random.default_rng(1).standard_normal((20, 6))
    sp.save(net, tmp_path / "model.npz")
    np.save(tmp_path / "S.npy", X)
    return tmp_path, net, X


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, *words):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    # at most a progress line ("pruning ... ...") before it, then the error on one line
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert errors[0].startswith("sparsify prune: error:"), err
    assert len(lines) <= 2 and all(line.startswith("pruning ") for line in lines[:-1]), err
    assert "Traceback" not in err
    for w in words:
        assert w in errors[0], (w, errors[0])


# --- prune: outputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["det", "rand", "hybrid"])
def test_prune_writes_the_same_model_as_the_python_api(files, capsys, method):
    d, net, X = files
    code, out, err = _run(["prune", d / "model.npz", "--data", d / "S.npy", "--keep", "0.3", "--method", method,
                           "--seed", "4", "--out", d / "pruned.npz", "--json", d / "report.json"], capsys)
    assert code == 0, err
    pruned = sp.load(d / "pruned.npz")
    expected = sp.prune(net, X, keep=0.3, method=method, rng=4)
    for a, b in zip(pruned.layers, expected.network.layers):
        assert a.weight.tobytes() == b.weight.tobytes()
        assert a.bias.tobytes() == b.bias.tobytes()
        assert a.activation == b.activation
    report = json.loads((d / "report.json").read_text())
    assert set(report) == REPORT_KEYS
    assert all(set(row) == LAYER_KEYS for row in report["layers"])
    assert report["method"] == method and report["seed"] == 4
    assert report["achieved"] == expected.report.achieved
    assert report["out"] == str(d / "pruned.npz")
    # the report is printed, with a line per layer
    assert "kept" in out and "wrote" in out
    assert sorted(os.listdir(d)) == ["S.npy", "model.npz", "pruned.npz", "report.json"]


def test_prune_with_a_budget_and_allocation(files, capsys):
    d, net, _ = files
    code, _, err = _run(["prune", d / "model.npz", "--data", d / "S.npy", "--budget", "17", "--method", "det",
                         "--allocation", "balanced", "--out", d / "p.npz", "--json", d / "r.json", "--quiet"], capsys)
    assert code == 0, err
    report = json.loads((d / "r.json").read_text())
    assert report["requested"] == report["achieved"] == 17
    assert report["allocation"] == "balanced"
    assert sum(int(np.count_nonzero(w)) for w in sp.load(d / "p.npz").weights) == 17


def test_prune_defaults_to_keep_a_tenth(files, capsys):
    d, net, _ = files
    code, out, _ = _run(["prune", d / "model.npz", "--data", d / "S.npy", "--out", d / "p.npz",
                         "--json", d / "r.json", "--quiet"], capsys)
    assert code == 0 and out == ""
    report = json.loads((d / "r.json").read_text())
    assert report["requested"] == round(0.1 * net.n_weights)
    assert report["method"] == "hybrid" and report["delta"] == 1e-16 and report["C"] == 3.0


def test_prune_a_plain_export_with_activations(files, capsys):
    d, net, X = files
    np.savez(d / "plain.npz", W0=net.layers[0].weight, b0=net.layers[0].bias, W1=net.layers[1].weight,
             b1=net.layers[1].bias)
    code, _, err = _run(["prune", d / "plain.npz", "--activations", "relu,identity", "--data", d / "S.npy",
                         "--keep", "0.5", "--method", "det", "--out", d / "p.npz", "--quiet"], capsys)
    assert code == 0, err
    pruned = sp.load(d / "p.npz")
    assert pruned.activations == ["relu", "identity"]
    expected = sp.prune(net, X, keep=0.5, method="det")
    for a, b in zip(pruned.weights, expected.network.weights):
        assert a.tobytes() == b.tobytes()


def test_prune_writes_masks_and_takes_exclude_and_per_layer_keep(files, capsys):
    d, net, X = files
    code, _, err = _run(["prune", d / "model.npz", "--data", d / "S.npy", "--keep", "0.3", "--exclude", "1",
                         "--method", "det", "--out", d / "p.npz", "--masks", d / "m.npz", "--json", d / "r.json",
                         "--quiet"], capsys)
    assert code == 0, err
    expected = sp.prune(net, X, keep=0.3, method="det", exclude=[1])
    with np.load(d / "m.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["mask0", "mask1"]
        for k, mk in enumerate(expected.masks):
            assert f[f"mask{k}"].dtype == bool
            np.testing.assert_array_equal(f[f"mask{k}"], mk)
    assert sp.load(d / "p.npz").weights[1].tobytes() == net.weights[1].tobytes()
    report = json.loads((d / "r.json").read_text())
    assert report["excluded"] == [1] and report["masks"] == str(d / "m.npz")
    code, _, err = _run(["prune", d / "model.npz", "--data", d / "S.npy", "--keep", "0.5,0.2", "--method", "det",
                         "--out", d / "q.npz", "--quiet"], capsys)
    assert code == 0, err
    for f, w, w_hat in zip([0.5, 0.2], net.weights, sp.load(d / "q.npz").weights):
        assert np.count_nonzero(w_hat) == round(f * w.size)


def test_prune_choices_and_defaults_come_from_the_package():
    from sparsify import allocation, bounds
    from sparsify.prune import DEFAULT_METHOD, METHODS

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices["prune"]
    opts = {a.dest: a for a in sub._actions}
    # the default is resolved at run time: DEFAULT_METHOD, or "det" with --pattern (top-N per group)
    assert tuple(opts["method"].choices) == METHODS and opts["method"].default is None
    assert DEFAULT_METHOD in opts["method"].help
    assert tuple(opts["allocation"].choices) == allocation.ALLOCATIONS
    assert opts["delta"].default == bounds.DEFAULT_DELTA and opts["C"].default == bounds.DEFAULT_C


# --- help -------------------------------------------------------------------------------------------
def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def test_prune_and_demo_are_registered():
    assert {"prune", "demo"} <= set(_subcommands())


@pytest.mark.parametrize("name", _subcommands())
def test_help_of_every_subcommand_exits_zero(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sparsify {name}")


def test_top_level_help_and_version(capsys):
    for argv in (["--help"], ["--version"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "prune" in out and sp.__version__ in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


# --- errors: exit 2, one line, no traceback, no files ---------------------------------------------------
def _bad_cases(d):
    np.save(d / "nan.npy", np.full((5, 6), np.nan))
    np.save(d / "narrow.npy", np.ones((5, 4)))
    np.save(d / "flat.npy", np.ones(6))
    np.save(d / "empty.npy", np.ones((0, 6)))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "corrupt.npz").write_bytes(b"not a zip file at all")
    np.savez(d / "plain.npz", W0=np.ones((3, 6)))
    np.save(d / "array.npy", np.ones((3, 3)))
    m, s = d / "model.npz", d / "S.npy"
    return {
        "missing model": ([d / "absent.npz", "--data", s], ["model", "does not exist"]),
        "corrupt model": ([d / "corrupt.npz", "--data", s], ["model"]),
        "npy as model": ([d / "array.npy", "--data", s], ["model"]),
        "plain without activations": ([d / "plain.npz", "--data", s], ["activations"]),
        "wrong number of activations": ([d / "plain.npz", "--activations", "relu,relu", "--data", s], ["activations"]),
        "unknown activation": ([d / "plain.npz", "--activations", "swish", "--data", s], ["swish"]),
        "missing data": ([m, "--data", d / "absent.npy"], ["--data", "does not exist"]),
        "nan data": ([m, "--data", d / "nan.npy"], ["--data", "NaN"]),
        "narrow data": ([m, "--data", d / "narrow.npy"], ["--data", "4"]),
        "1-D data": ([m, "--data", d / "flat.npy"], ["--data", "shape"]),
        "empty data": ([m, "--data", d / "empty.npy"], ["--data", "empty"]),
        "pickled data": ([m, "--data", d / "objects.npy"], ["--data", "pickled"]),
        "npz data": ([m, "--data", m], ["--data", ".npz"]),
        "keep 0": ([m, "--data", s, "--keep", "0"], ["keep"]),
        "keep 1.5": ([m, "--data", s, "--keep", "1.5"], ["keep"]),
        "keep nan": ([m, "--data", s, "--keep", "nan"], ["keep"]),
        "budget 0": ([m, "--data", s, "--budget", "0"], ["budget"]),
        "budget too large": ([m, "--data", s, "--budget", "100000"], ["budget"]),
        "delta 0": ([m, "--data", s, "--delta", "0"], ["delta"]),
        "delta 1": ([m, "--data", s, "--delta", "1"], ["delta"]),
        "C 0": ([m, "--data", s, "--C", "0"], ["C"]),
        "C -1": ([m, "--data", s, "--C", "-1"], ["C"]),
        "negative seed": ([m, "--data", s, "--seed", "-1"], ["seed"]),
        "per-layer keep of the wrong length": ([m, "--data", s, "--keep", "0.5,0.5,0.5"], ["keep", "per layer"]),
        "per-layer keep 0": ([m, "--data", s, "--keep", "0.5,0"], ["keep[1]"]),
        "exclude unknown layer": ([m, "--data", s, "--exclude", "5"], ["exclude"]),
        "exclude every layer": ([m, "--data", s, "--exclude", "0,1"], ["exclude", "every layer"]),
        "masks at the out path": ([m, "--data", s, "--masks", d / "OUT.npz"], ["--masks", "same file"]),
        "masks at the json path": ([m, "--data", s, "--masks", d / "OUT.json"], ["--masks", "--json"]),
        "json at the out path": ([m, "--data", s, "--out", d / "OUT.json"], ["--json", "same file", "--out"]),
        "out directory missing": ([m, "--data", s, "--out", d / "nodir" / "p.npz"], ["directory"]),
    }


CASES = [
    "missing model", "corrupt model", "npy as model", "plain without activations", "wrong number of activations",
    "unknown activation", "missing data", "nan data", "narrow data", "1-D data", "empty data", "pickled data",
    "npz data", "keep 0", "keep 1.5", "keep nan", "budget 0", "budget too large", "delta 0", "delta 1", "C 0",
    "C -1", "negative seed", "out directory missing", "per-layer keep of the wrong length", "per-layer keep 0",
    "exclude unknown layer", "exclude every layer", "masks at the out path", "masks at the json path",
    "json at the out path",
]


def test_cases_cover_the_table(tmp_path):
    assert sorted(_bad_cases(tmp_path)) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_errors_exit_2_with_one_line_and_leave_no_files(files, capsys, case):
    d = files[0]
    argv, words = _bad_cases(d)[case]
    before = sorted(os.listdir(d))
    if "--out" not in argv:
        argv = argv + ["--out", d / "OUT.npz"]
    code, out, err = _run(["prune", *argv, "--json", d / "OUT.json"], capsys)
    _assert_one_line_error(code, err, *words)
    assert sorted(os.listdir(d)) == before   # no OUT, no JSON, no temp files


@pytest.mark.parametrize("argv", [
    ["--keep", "0.1", "--budget", "5"],      # mutually exclusive
    ["--method", "magic"],
    ["--allocation", "local"],
    ["--keep", "lots"],
    ["--keep", "0.5,lots"],
    ["--exclude", "first"],
])
def test_usage_errors_exit_2(files, capsys, argv):
    d = files[0]
    before = sorted(os.listdir(d))
    with pytest.raises(SystemExit) as info:
        main(["prune", str(d / "model.npz"), "--data", str(d / "S.npy"), "--out", str(d / "OUT.npz"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" in err
    assert sorted(os.listdir(d)) == before


def test_a_failing_json_path_leaves_no_model_file(files, capsys):
    d = files[0]
    code, _, err = _run(["prune", d / "model.npz", "--data", d / "S.npy", "--keep", "0.5",
                         "--out", d / "OUT.npz", "--json", d / "nodir" / "r.json"], capsys)
    assert code == 2
    assert "--json" in err
    assert not (d / "OUT.npz").exists()


def test_installed_executable_prunes(files):
    """One run of the real console script, as a user would call it."""
    d, net, X = files
    exe = shutil.which("sparsify", path=str(Path(sys.executable).parent)) or shutil.which("sparsify")
    if exe is None:
        pytest.skip("the sparsify console script is not installed")
    proc = subprocess.run([exe, "prune", str(d / "model.npz"), "--data", str(d / "S.npy"), "--keep", "0.2",
                           "--method", "rand", "--seed", "9", "--out", str(d / "p.npz"), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = sp.prune(net, X, keep=0.2, method="rand", rng=9)
    for a, b in zip(sp.load(d / "p.npz").weights, expected.network.weights):
        assert a.tobytes() == b.tobytes()
    bad = subprocess.run([exe, "prune", str(d / "absent.npz"), "--data", str(d / "S.npy"), "--out",
                          str(d / "q.npz")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert not (d / "q.npz").exists()
