"""sparsify.verify and `sparsify verify`: statistics, per-side checks, the command line."""
import json
import math
import sys

import numpy as np
import pytest
from scipy.stats import beta

import sparsify
from sparsify import cli
from sparsify import reference as ref
from sparsify import verify as V
from sparsify.allocation import ALLOCATIONS
from sparsify.bounds import DEFAULT_C, DEFAULT_DELTA
from sparsify.prune import METHODS


# --- statistics ------------------------------------------------------------------
@pytest.mark.parametrize("k, n", [(0, 10), (1, 50), (7, 20), (20, 20)])
def test_clopper_pearson_matches_beta_quantiles(k, n):
    lo, hi = V.clopper_pearson(k, n, 0.95)
    exp_lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    exp_hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    np.testing.assert_allclose([lo, hi], [exp_lo, exp_hi], rtol=1e-8, atol=1e-12)


def test_clopper_pearson_zero_failures_closed_form():
    # with k = 0 the upper bound solves (1 - p)^n = 0.025
    np.testing.assert_allclose(V.clopper_pearson(0, 10)[1], 1 - 0.025 ** (1 / 10), rtol=1e-10)


@pytest.mark.parametrize(
    "k, n, allowed, expected, confirmed",
    [
        (0, 50, 1e-16, "holds", False),      # nothing seen, but 50 trials cannot show 1e-16
        (1, 50, 1e-16, "violated", False),   # one failure is overwhelming evidence against 1e-16
        (0, 200, 0.05, "holds", True),       # CP upper 0.018 <= 0.05: shown
        (3, 50, 0.05, "not enough trials", False),
        (2, 50, 0.05, "holds", False),
        (30, 50, 0.05, "violated", False),
        (5, 5, 1.0, "holds", True),          # a vacuous allowance is always met
    ],
)
def test_verdict_rule(k, n, allowed, expected, confirmed):
    v = V.verdict(k, n, allowed)
    assert v["verdict"] == expected
    assert v["confirmed"] is confirmed
    assert v["failure_rate"] == k / n
    assert v["failure_rate_lower"] <= v["failure_rate"] <= v["failure_rate_upper"]


def test_hoeffding_interval():
    lo, hi = V.hoeffding_interval(0.1, 50, 0.95)
    half = math.sqrt(math.log(40) / 100)
    np.testing.assert_allclose([lo, hi], [max(0, 0.1 - half), 0.1 + half], rtol=1e-12)


@pytest.mark.parametrize(
    "mean, n, allowed, expected",
    [
        (0.0, 10, 0.05, "holds"),
        (0.04, 10, 0.05, "holds"),               # at most the allowance
        (0.2, 10, 0.05, "not enough trials"),    # half-width sqrt(ln 40 / 20) = 0.43: lower end 0
        (0.9, 50, 0.05, "violated"),             # lower end 0.9 - 0.19 > 0.05
    ],
)
def test_pair_verdict_rule(mean, n, allowed, expected):
    lo, hi, v = V.pair_verdict(mean, n, allowed)
    assert v == expected
    assert (lo, hi) == V.hoeffding_interval(mean, n)


# --- verdicts in words ---------------------------------------------------------------
def test_verdict_words_name_a_vacuous_allowance():
    st = V.verdict(5, 5, 3.0)  # the union bound allows more than every trial failing
    assert st["verdict"] == "holds" and st["vacuous"]
    words = V.verdict_words(st)
    assert words.startswith("holds (vacuous:") and "allowance >= 1" in words and "says nothing" in words


def test_verdict_words_name_a_tolerance_above_one():
    st = V.verdict(2, 50, 0.05)  # within the allowance
    assert st["verdict"] == "holds"
    assert V.verdict_words(st, eps=0.5) == "holds"
    words = V.verdict_words(st, eps=2.0)
    assert words == "holds (vacuous: eps > 1, the bound says nothing)"
    both = V.verdict_words(V.verdict(5, 5, 1.0), eps=7.0)
    assert "allowance >= 1 and eps > 1" in both and "the bounds say nothing" in both


@pytest.mark.parametrize("k, n, allowed, eps", [(0, 5, 1.0, 9.0), (1, 50, 1e-16, 9.0), (3, 50, 0.05, 9.0)])
def test_verdict_words_leave_other_verdicts_alone(k, n, allowed, eps):
    st = V.verdict(k, n, allowed)
    assert V.verdict_words(st, eps) == st["verdict"]  # no failures, violated, not enough trials


def test_format_table_says_when_a_verdict_is_vacuous(small):
    net, S, T = small
    res = V.verify(net, S, T, keep=0.5, method="det", seeds=1)
    assert "vacuous" not in V.format_table(res)
    res["layers"][1]["out_of_sample"].update(V.verdict(1, 1, 2.0))  # one failing seed under an allowance of 1

    def row_line():
        lines = [ln for ln in V.format_table(res).splitlines() if ln.lstrip().startswith("1 ") and "1/1" in ln]
        assert len(lines) == 1
        return lines[0]

    res["layers"][1]["eps_median"] = 0.5
    assert row_line().endswith("holds (vacuous: allowance >= 1, the bound says nothing)")
    res["layers"][1]["eps_median"] = 3.0  # the claimed tolerances say nothing either
    assert row_line().endswith("holds (vacuous: allowance >= 1 and eps > 1, the bounds say nothing)")
    res["eps"] = 0.5  # a tolerance given for every side replaces the claimed ones
    assert row_line().endswith("holds (vacuous: allowance >= 1, the bound says nothing)")


# --- JSON ------------------------------------------------------------------------------
def test_json_ready_encodes_non_finite_floats():
    obj = {"a": math.inf, "b": [1.5, -math.inf, {"c": math.nan}], "d": (None, "x", 2), "e": 0.0}
    out = V.json_ready(obj)
    assert out == {"a": "inf", "b": [1.5, "-inf", {"c": "nan"}], "d": [None, "x", 2], "e": 0.0}
    assert math.isinf(obj["a"])  # the input is not modified
    json.dumps(out, allow_nan=False)
    assert float(out["b"][1]) == -math.inf


# --- per-side checks ------------------------------------------------------------------
def test_side_check_measures_each_side():
    A = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    W = np.array([[1.0, 1.0, -2.0]])
    W_hat = np.array([[2.0, 0.0, -1.0]])
    # positive side: Z = (2, 2), Z_hat = (2, 4): errors (0, 1); negative: Z = (2, 2), Z_hat = (1, 1): 0.5
    fails, errors, pair = V.side_check(A, W, W_hat, np.array([[0.9, 0.6]]), rtol=1e-12)
    np.testing.assert_allclose(errors, [[1.0, 0.5]])
    np.testing.assert_array_equal(fails, [[True, False]])
    np.testing.assert_array_equal(pair, [[1, 0]])
    fails, _, pair = V.side_check(A, W, W_hat, 0.4, rtol=1e-12)
    np.testing.assert_array_equal(pair, [[1, 2]])


def test_side_preactivations_are_the_parts_of_each_side():
    A = np.array([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    W = np.array([[1.0, 1.0, -2.0]])
    W_hat = np.array([[2.0, 0.0, -1.0]])
    (Zp, Zhp), (Zn, Zhn) = ref.side_preactivations(A, W, W_hat)
    np.testing.assert_array_equal(Zp, [[2.0], [2.0]])
    np.testing.assert_array_equal(Zhp, [[2.0], [4.0]])
    np.testing.assert_array_equal(Zn, [[2.0], [2.0]])
    np.testing.assert_array_equal(Zhn, [[1.0], [1.0]])


def test_side_check_errors_equal_the_report_reference(small):
    """The check and the report measure one quantity: where a side has Z != 0, their errors agree."""
    net, S, _ = small
    res = sparsify.prune(net, S, keep=0.3, method="rand", rng=3)
    for A, layer, W_hat in zip(net.trace(S), net.layers, res.network.weights):
        _, errors, _ = V.side_check(ref.split_inputs(A), layer.weight, W_hat, 0.1, rtol=1e-10)
        want = ref.side_errors(A, layer.weight, W_hat)
        has = ~np.isnan(want)
        np.testing.assert_array_equal(errors[has], want[has])
        assert np.all(errors[~has] == 0)


def test_output_error_edge_cases():
    z = np.array([[1.0, 0.0], [2.0, 0.0]])
    z_hat = np.array([[1.5, 0.0], [2.0, 1.0]])
    np.testing.assert_array_equal(V.output_error(z, z_hat), [0.5, np.inf])


# --- verify ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    net = sparsify.random_mlp([6, 12, 8, 3], rng=1)
    return net, rng.standard_normal((20, 6)), rng.standard_normal((30, 6))


def test_verify_det_in_sample_never_fails(small):
    net, S, T = small
    res = V.verify(net, S, T, keep=0.3, method="det", seeds=3)
    assert res["holds"] is True
    json.dumps(res, allow_nan=False)  # JSON-ready, no NaN
    assert [row["layer"] for row in res["layers"]] == [0, 1, 2]
    for row in res["layers"]:
        assert row["failures"] == 0 and row["verdict"] == "holds"
        assert row["allowed_rate"] == 0.0  # deterministic sides are certain
        assert row["delta"] == 1e-16
        assert set(row["out_of_sample"]) >= {"failure_rate", "failure_rate_upper", "verdict", "bound_over_measured"}
        if row["bound_over_measured"] is not None:
            # det claims C * pruned mass >= C * measured error on S
            assert row["bound_over_measured_min"] >= 3.0 * (1 - 1e-9)


def test_verify_detects_a_too_small_eps(small):
    net, S, T = small
    res = V.verify(net, S, T, keep=0.2, method="det", seeds=3, eps=1e-6)
    assert res["holds"] is False
    assert any(row["verdict"] == "violated" for row in res["layers"])
    assert any(row["failing_seeds"] == [0, 1, 2] for row in res["layers"])


def test_verify_rand_with_testable_delta(small):
    net, S, T = small
    res = V.verify(net, S, T, keep=0.4, method="rand", seeds=4, delta=0.05)
    assert res["holds"] is True
    assert res["network"]["product_applicable"] is True
    assert any(row["sampled_sides_mean"] > 0 for row in res["layers"])
    text = V.format_table(res)
    assert "in-sample" in text and "out-of-sample" in text and "pair verdict" in text


def test_verify_network_bounds_are_reported(small):
    net, S, T = small
    res = V.verify(net, S, T, keep=0.9, method="det", seeds=1, C=1.0)
    n = res["network"]
    assert n["product_applicable"] and n["forward_applicable"]
    for key in ("in_sample", "out_of_sample"):
        assert n[key]["points"] == (20 if key == "in_sample" else 30)
        for name in ("product", "forward"):
            assert set(n[key][name]) == {"finite_fraction", "holds_fraction", "bound_median", "bound_over_measured"}
    fwd = n["in_sample"]["forward"]
    assert fwd["finite_fraction"] > 0 and fwd["holds_fraction"] == 1.0


def test_verify_network_bound_not_claimed_after_sigmoid():
    rng = np.random.default_rng(2)
    net = sparsify.random_mlp([5, 7, 2], activation="sigmoid", rng=2)
    res = V.verify(net, rng.standard_normal((10, 5)), rng.standard_normal((10, 5)), keep=0.5, method="det", seeds=1)
    assert res["network"]["product_applicable"] is False
    assert res["network"]["in_sample"]["product"] is None
    assert "sigmoid" in res["network"]["product_reason"]
    assert res["network"]["forward_applicable"] is True


@pytest.mark.parametrize(
    "kwargs, exc, text",
    [
        (dict(seeds=0), ValueError, "seeds"),
        (dict(method="magic"), ValueError, "method"),
        (dict(eps=-1.0), ValueError, "eps"),
        (dict(delta=2.0), ValueError, "delta"),
        (dict(first_seed=-1), ValueError, "first_seed"),
    ],
)
def test_verify_rejects_bad_arguments(small, kwargs, exc, text):
    net, S, T = small
    with pytest.raises(exc, match=text):
        V.verify(net, S, T, **kwargs)


def test_verify_traces_each_batch_once(small, monkeypatch):
    """The original network runs forward once on T (and once on S outside pruning), not once per use."""
    net, S, T = small
    calls = []
    trace = sparsify.Network.trace

    def counting(self, X):
        if self is net and np.shape(X) == T.shape and np.array_equal(X, T):
            calls.append(1)
        return trace(self, X)

    monkeypatch.setattr(sparsify.Network, "trace", counting)
    V.verify(net, S, T, keep=0.5, method="det", seeds=2)
    assert len(calls) == 1


def test_verify_rejects_an_eps_beyond_eps_max(small):
    net, S, T = small
    with pytest.raises(ValueError, match="eps"):
        V.verify(net, S, T, eps=V.EPS_MAX * 10, seeds=1)
    with pytest.raises(TypeError, match="seeds"):
        V.verify(net, S, T, seeds=2.5)


def test_verify_subpackage_is_the_top_level_name():
    import types

    assert isinstance(sparsify.verify, types.ModuleType)
    assert callable(sparsify.verify.verify) and sparsify.verify.verify is V.check.verify
    assert not hasattr(sparsify.bounds, "propagate") and not hasattr(sparsify.bounds, "cancellation")
    for mod in (V, V.check, V.stats, V.output, V.propagation):
        assert all(hasattr(mod, name) for name in mod.__all__), mod.__name__


def test_verify_rejects_bad_batches(small):
    net, S, _ = small
    with pytest.raises(ValueError, match="X_T"):
        V.verify(net, S, np.ones((4, 5)))
    with pytest.raises(ValueError, match="X_T"):
        V.verify(net, S, np.ones((0, 6)))
    with pytest.raises(TypeError, match="network"):
        V.verify("model.npz", S, S)


# --- command line ------------------------------------------------------------------------
@pytest.fixture()
def files(tmp_path, small):
    net, S, T = small
    sparsify.save(net, tmp_path / "m.npz")
    np.save(tmp_path / "S.npy", S)
    np.save(tmp_path / "T.npy", T)
    return tmp_path


def test_cli_verify_writes_json_and_prints_table(files, capsys):
    out = files / "v.json"
    rc = cli.main([
        "verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "T.npy"),
        "--seeds", "3", "--keep", "0.3", "--method", "hybrid", "--json", str(out),
    ])
    captured = capsys.readouterr()
    assert rc == 0
    assert "in-sample (S, no assumption)" in captured.out
    assert "verify: seed 3/3" in captured.err
    data = json.loads(out.read_text())
    assert data["holds"] is True and len(data["layers"]) == 3
    assert {"layer", "failure_rate", "failure_rate_upper", "delta", "verdict", "bound_over_measured"} <= set(data["layers"][0])
    assert [p.name for p in files.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_cli_verify_exit_status_1_on_violation(files, capsys):
    rc = cli.main([
        "verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "T.npy"),
        "--seeds", "2", "--method", "det", "--eps", "1e-9", "--quiet",
    ])
    assert rc == 1


def test_cli_verify_bad_input_exits_2(files, capsys):
    rc = cli.main(["verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "missing.npy")])
    assert rc == 2
    assert "--test" in capsys.readouterr().err


def test_cli_verify_plot(files, capsys):
    png = files / "v.png"
    rc = cli.main([
        "verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "T.npy"),
        "--seeds", "1", "--quiet", "--plot", str(png),
    ])
    assert rc == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_verify_plot_without_matplotlib(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    rc = cli.main([
        "verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "T.npy"),
        "--seeds", "1", "--plot", str(files / "v.png"),
    ])
    assert rc == 2
    assert "sparsify[plot]" in capsys.readouterr().err
    assert not (files / "v.png").exists()


def test_cli_verify_outputs_are_all_or_nothing(files, capsys):
    """A --plot into a missing directory is refused before the run, and no --json is left behind."""
    out = files / "r.json"
    rc = cli.main([
        "verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "T.npy"),
        "--seeds", "1", "--quiet", "--json", str(out), "--plot", str(files / "nodir" / "v.png"),
    ])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "does not exist" in err
    assert not out.exists()


def _verify_args(files, *extra):
    return ["verify", str(files / "m.npz"), "--data", str(files / "S.npy"), "--test", str(files / "T.npy"),
            *extra]


def test_cli_verify_refuses_a_huge_eps_before_running(files, capsys):
    out = files / "big.json"
    rc = cli.main(_verify_args(files, "--seeds", "2", "--eps", "1e308", "--json", str(out)))
    err = capsys.readouterr().err
    assert rc == 2
    assert "--eps" in err and "1e+308" in err
    assert "verify: seed" not in err  # refused before the first pruning
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, text",
    [
        (["--delta", "inf"], "--delta"),
        (["--delta", "nan"], "--delta"),
        (["--C", "0.5"], "--C"),
        (["--C", "1e400"], "--C"),
        (["--confidence", "1"], "--confidence"),
        (["--keep", "1.5"], "--keep"),
        (["--budget", "0"], "--budget"),
        (["--seeds", "0"], "--seeds"),
        (["--first-seed", "-1"], "--first-seed"),
        (["--eps", "0"], "--eps"),
    ],
)
def test_cli_verify_refuses_bad_numbers_up_front(files, capsys, flags, text):
    rc = cli.main(_verify_args(files, *flags))
    err = capsys.readouterr().err
    assert rc == 2 and text in err
    assert "verify: seed" not in err


def test_cli_verify_refuses_json_and_plot_on_one_file(files, capsys):
    same = files / "out.dat"
    rc = cli.main(_verify_args(files, "--seeds", "1", "--json", str(same), "--plot", str(same)))
    err = capsys.readouterr().err
    assert rc == 2
    assert "--json and --plot name the same file" in err and "verify: seed" not in err
    assert not same.exists()


@pytest.mark.parametrize("flag, target", [("--json", "m.npz"), ("--json", "S.npy"), ("--plot", "T.npy")])
def test_cli_verify_refuses_to_overwrite_an_input(files, capsys, flag, target):
    before = (files / target).read_bytes()
    rc = cli.main(_verify_args(files, "--seeds", "1", flag, str(files / target)))
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and "overwrite" in err
    assert (files / target).read_bytes() == before


def test_cli_verify_defaults_and_choices_are_the_package_constants():
    parser = cli.build_parser()
    args = parser.parse_args(["verify", "m.npz", "--data", "S.npy", "--test", "T.npy"])
    assert args.delta == DEFAULT_DELTA and args.C == DEFAULT_C
    sub = next(a for a in parser._actions if a.dest == "command").choices["verify"]
    choices = {a.dest: a.choices for a in sub._actions}
    assert tuple(choices["method"]) == METHODS
    assert tuple(choices["allocation"]) == ALLOCATIONS


def test_cli_verify_writes_non_finite_numbers_as_strings(files, capsys, monkeypatch):
    """A result with an infinite number (an output that is exactly 0 before pruning) still makes strict JSON."""
    real = V.verify

    def with_inf(*args, **kwargs):
        res = real(*args, **kwargs)
        res["network"]["in_sample"]["measured_max"] = math.inf
        return res

    monkeypatch.setattr(V, "verify", with_inf)
    out = files / "inf.json"
    rc = cli.main(_verify_args(files, "--seeds", "1", "--method", "det", "--quiet", "--json", str(out)))
    assert rc == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["network"]["in_sample"]["measured_max"] == "inf"

