"""sparsify.verify and `sparsify verify`: statistics, per-side checks, the command line."""
import json
import math
import sys

import numpy as np
import pytest
from scipy.stats import beta

import sparsify
from sparsify import cli
from sparsify import verify as V


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
