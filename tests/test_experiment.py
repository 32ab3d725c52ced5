"""The experiment runner: summary arithmetic, robust results.csv, resume, CLI."""
import io
import json

import numpy as np
import pytest

from sparsify import cli
from sparsify import experiment as E
from sparsify.experiment.results import _row_line


def tiny_config(**overrides):
    values = dict(data="generated", hidden=[12], epochs=3, retrain_epochs=1, milestones=[], retrain_milestones=[],
                  methods=["sipp-det", "sipp-hybrid", "magnitude-global", "snip"], keeps=[0.5, 0.2], seeds=[0, 1],
                  s_size=16, lottery=False)
    values.update(overrides)
    return E.ExperimentConfig.from_dict(values)


def hand_rows():
    """dense 0.90 / 0.92 (mean 0.91); method a at three keeps; method b never within 0.5pp."""
    rows = []

    def add(method, keep, seed, acc):
        rows.append(dict(method=method, mode="oneshot", keep=keep, seed=seed, test_accuracy=acc))

    add("dense", 1.0, 0, 0.90)
    add("dense", 1.0, 1, 0.92)
    for seed, (a5, a2, a1) in enumerate([(0.91, 0.905, 0.80), (0.91, 0.90, 0.84)]):
        add("a", 0.5, seed, a5)
        add("a", 0.2, seed, a2)    # mean 0.9025: within 1pp, not within 0.5pp
        add("a", 0.1, seed, a1)    # mean 0.82
    add("b", 0.5, 0, 0.85)
    add("b", 0.5, 1, 0.89)         # mean 0.87: within none of 0.5, 1, 2 pp
    add("b", 0.1, 0, 0.895)
    add("b", 0.1, 1, 0.895)        # mean 0.895: within 2pp only (non-monotone on purpose)
    return rows


def test_commensurate_prune_ratio_on_a_hand_made_table():
    ratios = E.commensurate_prune_ratios(hand_rows())
    np.testing.assert_allclose(E.dense_accuracy(hand_rows()), 0.91)
    a, b = ratios[("oneshot", "a")], ratios[("oneshot", "b")]
    np.testing.assert_allclose(a[0.005], 0.5)
    np.testing.assert_allclose(a[0.01], 0.8)
    np.testing.assert_allclose(a[0.02], 0.8)
    assert b[0.005] is None and b[0.01] is None
    np.testing.assert_allclose(b[0.02], 0.9)
    assert ("oneshot", "dense") not in ratios
    table = E.accuracy_table(hand_rows())
    mean, std, n = table[("oneshot", "a", 0.1)]
    np.testing.assert_allclose([mean, std, n], [0.82, 0.02, 2])
    text = E.format_summary(hand_rows())
    assert "82.0±2.0" in text and "dense 91.00%" in text


def make_row(method="sipp-det", keep=0.5, seed=0, acc=0.9):
    return dict(method=method, mode="oneshot", keep=keep, seed=seed, test_accuracy=acc, accuracy_after_prune=acc,
                drop_after_prune=0.01, kept_weights=5, total_weights=10, keep_achieved=0.5, prune_seconds=0.1,
                retrain_seconds=0.0, kept_per_layer=[3, 2], total_per_layer=[6, 4], sampled_sides=0, det_sides=3,
                dead_sides=0, allocation="global", s_size=16, per_class_recall=[1.0, float("nan")])


def test_results_csv_survives_a_half_written_last_line(tmp_path):
    path = tmp_path / "results.csv"
    rows = [make_row(keep=0.5), make_row(keep=0.2, acc=0.8)]
    E.write_results_csv(path, rows)
    whole = path.read_text()
    path.write_text(whole + _row_line(make_row(keep=0.1))[:25])  # interrupted append
    back = E.read_results_csv(path)
    assert [r["keep"] for r in back] == [0.5, 0.2]
    np.testing.assert_allclose(back[1]["test_accuracy"], 0.8)
    assert back[0]["kept_per_layer"] == [3, 2]
    assert back[0]["per_class_recall"][0] == 1.0 and np.isnan(back[0]["per_class_recall"][1])
    # a garbled complete line is refused, naming the file and the line (it is never silently skipped)
    path.write_text(whole + "oops,1\n")
    with pytest.raises(ValueError, match=r"results\.csv', line 4: has 2 field\(s\), expected 23"):
        E.read_results_csv(path)


def run_tiny(tmp_path, cfg, name="run"):
    log = io.StringIO()
    res = E.run_experiment(cfg, tmp_path / name, log=log, plots=False)
    return res, log.getvalue()


def progress_lines(log):
    return [line for line in log.splitlines() if line.startswith("[")]


def test_run_writes_every_cell_and_resume_skips_finished_ones(tmp_path):
    cfg = tiny_config()
    res, log = run_tiny(tmp_path, cfg)
    out = tmp_path / "run"
    n_cells = 2 * (1 + 4 * 2)
    assert len(res.rows) == n_cells and len(progress_lines(log)) == n_cells
    keys = {(r["method"], r["keep"], r["seed"]) for r in res.rows}
    assert ("dense", 1.0, 0) in keys and ("snip", 0.2, 1) in keys
    for r in res.rows:
        if r["method"] != "dense":
            assert r["kept_weights"] == round(r["keep"] * r["total_weights"])
            assert sum(r["kept_per_layer"]) == r["kept_weights"]
            np.testing.assert_allclose(r["drop_after_prune"], E.dense_accuracy(
                [x for x in res.rows if x["seed"] == r["seed"]]) - r["accuracy_after_prune"])
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["rows"]) == n_cells and doc["config"]["keeps"] == [0.5, 0.2]
    assert (out / "summary.txt").read_text().startswith("mode retrain")

    # interrupt: drop the last three rows and leave half a line behind
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-3]) + lines[-3][:10])
    res2, log2 = run_tiny(tmp_path, cfg)
    redone = progress_lines(log2)
    assert len(redone) == 3, redone
    assert "resuming with %d cells done" % (n_cells - 3) in log2
    assert "trained" not in log2  # the reference networks were loaded, not retrained
    before = {(r["method"], r["keep"], r["seed"]): r["test_accuracy"] for r in res.rows}
    after = {(r["method"], r["keep"], r["seed"]): r["test_accuracy"] for r in res2.rows}
    assert before == after  # the same seeds give the same results
    # a finished run resumes to nothing
    _, log3 = run_tiny(tmp_path, cfg)
    assert progress_lines(log3) == []


def test_resume_refuses_another_configuration(tmp_path):
    run_tiny(tmp_path, tiny_config(seeds=[0], methods=["sipp-det"]))
    with pytest.raises(ValueError, match=r"different configuration \(differs in \['epochs'\]\)"):
        run_tiny(tmp_path, tiny_config(seeds=[0], methods=["sipp-det"], epochs=4))


def test_iterative_cascade_and_lottery_panel(tmp_path):
    cfg = tiny_config(mode="iterative", methods=["sipp-hybrid", "random"], seeds=[0], keeps=[0.6, 0.3, 0.1],
                      lottery=True, lottery_keeps=[0.3])
    res, log = run_tiny(tmp_path, cfg)
    chain = sorted((r for r in res.rows if r["mode"] == "iterative" and r["method"] == "random"),
                   key=lambda r: -r["keep"])
    assert [r["keep"] for r in chain] == [0.6, 0.3, 0.1]
    assert [r["kept_weights"] for r in chain] == [round(k * chain[0]["total_weights"]) for k in (0.6, 0.3, 0.1)]
    lottery = [r for r in res.rows if r["mode"] == "lottery"]
    assert sorted(r["method"] for r in lottery) == ["random", "sipp-hybrid"]
    # the random ticket has the SiPP ticket's kept count in every layer
    assert lottery[0]["kept_per_layer"] == lottery[1]["kept_per_layer"]
    # resume in the middle of a chain: forget the last step
    out = tmp_path / "run"
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    kept_lines = [l for l in lines if not (l.startswith("random,iterative,0.1,"))]
    (out / "results.csv").write_text("".join(kept_lines))
    res2, log2 = run_tiny(tmp_path, cfg)
    assert len(progress_lines(log2)) == 1
    again = [r for r in res2.rows if r["mode"] == "iterative" and r["method"] == "random" and r["keep"] == 0.1][0]
    np.testing.assert_allclose(again["test_accuracy"], chain[2]["test_accuracy"])


def test_config_validation_messages():
    with pytest.raises(ValueError, match="unknown key\\(s\\) \\['epoch'\\]"):
        E.ExperimentConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="methods: unknown name\\(s\\) \\['sipp'\\]"):
        E.ExperimentConfig.from_dict({"methods": ["sipp"]})
    with pytest.raises(ValueError, match="mode: must be one of"):
        E.ExperimentConfig.from_dict({"mode": "twoshot"})
    with pytest.raises(ValueError, match=r"keeps\[1\]: must be in \(0, 1\), got 1.5"):
        E.ExperimentConfig.from_dict({"keeps": [0.5, 1.5]})
    with pytest.raises(ValueError, match="keep_min: must not exceed keep_max \\(0.2\\), got 0.5"):
        E.ExperimentConfig.from_dict({"keep_min": 0.5, "keep_max": 0.2})
    assert E.ExperimentConfig.from_dict({"seeds": 3}).seeds == [0, 1, 2]


def test_keep_grid_is_geometric_and_rounded():
    cfg = E.ExperimentConfig.from_dict({"keep_max": 0.5, "keep_min": 0.02, "keep_points": 3})
    np.testing.assert_allclose(cfg.keep_grid(), [0.5, 0.1, 0.02])
    assert E.ExperimentConfig.from_dict({"keeps": [0.1, 0.3, 0.1]}).keep_grid() == [0.3, 0.1]


def test_cli_with_a_toml_file_and_flags(tmp_path, capsys):
    toml = tmp_path / "exp.toml"
    toml.write_text('data = "generated"\nhidden = [10]\nepochs = 2\nretrain_epochs = 1\nmilestones = []\n'
                    'retrain_milestones = []\nkeeps = [0.3]\nseeds = [0]\ns_size = 12\nmode = "oneshot"\n')
    out = tmp_path / "out"
    code = cli.main([
        "experiment", str(toml), "--out", str(out), "--methods", "sipp-rand,wanda", "--no-lottery", "--no-plots",
        "--quiet",
    ])
    assert code == 0
    text = capsys.readouterr().out
    assert "mode oneshot" in text and "sipp-rand" in text and "wanda" in text
    rows = E.read_results_csv(out / "results.csv")
    assert sorted({r["method"] for r in rows}) == ["dense", "sipp-rand", "wanda"]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    for column in ("method", "mode", "keep", "seed", "test_accuracy", "drop_after_prune", "kept_weights",
                   "prune_seconds"):
        assert column in header
    # a user error is one line on stderr and exit status 2
    toml.write_text('[train]\nepochs = 2\n')
    assert cli.main(["experiment", str(toml), "--out", str(tmp_path / "o2")]) == 2
    assert "write every key at the top level" in capsys.readouterr().err


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    cfg = tiny_config(seeds=[0], methods=["sipp-det", "random"], lottery=True, lottery_keeps=[0.5])
    res = E.run_experiment(cfg, tmp_path / "p", log=io.StringIO(), plots=True)
    names = sorted(p.name for p in res.plots)
    assert names == ["accuracy.png", "layers.png", "lottery.png"]
    for p in res.plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- refit methods (+ls suffix, obs) ------------------------------------------------------------
def test_refit_methods_refit_the_base_selection_and_leave_faithful_results_unchanged(tmp_path):
    from sparsify import data as D
    from sparsify.io import load
    from sparsify.reconstruct import reconstruct

    base = dict(mode="oneshot", seeds=[0], keeps=[0.5, 0.2], calibration=30)
    faithful, _ = run_tiny(tmp_path, tiny_config(methods=["sipp-hybrid", "random"], **base), "faithful")
    cfg = tiny_config(methods=["sipp-hybrid", "random", "sipp-hybrid+ls", "random+ls", "obs", "wanda+ls"], **base)
    res, log = run_tiny(tmp_path, cfg, "refit")
    by = {(r["method"], r["keep"]): r for r in res.rows}
    # adding refit methods changes no faithful result (their random numbers keep their positions)
    for r in faithful.rows:
        assert by[(r["method"], r["keep"])]["test_accuracy"] == r["test_accuracy"]
    for keep in (0.5, 0.2):
        for name in ("sipp-hybrid", "random"):
            plain, refit = by[(name, keep)], by[(name + "+ls", keep)]
            assert refit["kept_per_layer"] == plain["kept_per_layer"]  # the same selection, refitted
        for name in ("obs", "wanda+ls"):
            assert by[(name, keep)]["kept_weights"] == round(keep * by[(name, keep)]["total_weights"])
    # the cell's network is the base's mask refitted on S plus the 30 training points, by sparsify.reconstruct
    out = tmp_path / "refit"
    plain, X_S = E.reprune(cfg, out, "sipp-hybrid", 0.2, 0)
    refit, _ = E.reprune(cfg, out, "sipp-hybrid+ls", 0.2, 0)
    assert "refit on %d calibration points" % (len(X_S) + 30) in refit.report.refit
    assert all(np.array_equal(a, b) for a, b in zip(plain.masks, refit.masks))
    ds = D.load_dataset("generated", rng=0)
    dense = load(out / "networks" / "dense-seed0.npz")
    # the extra points: 30 training points drawn by the seed's purpose-8 generator (sorted), after S
    index = np.sort(np.random.default_rng(np.random.SeedSequence([0, 8])).choice(len(ds.y_train), 30, replace=False))
    expected = reconstruct(dense, plain.network, plain.masks, np.concatenate([X_S, ds.X_train[index]]))
    for w_r, w_p, w_e in zip(refit.network.weights, plain.network.weights, expected.weights):
        assert np.array_equal(w_r != 0, w_p != 0) and not np.array_equal(w_r, w_p)
        np.testing.assert_allclose(w_r, w_e, rtol=1e-9, atol=1e-12)
    acc = float(np.mean(np.argmax(refit.network.forward(ds.X_test), axis=1) == ds.y_test))
    np.testing.assert_allclose(acc, by[("sipp-hybrid+ls", 0.2)]["test_accuracy"])
    # refitting on S alone differs from S plus training points
    solo = reconstruct(dense, plain.network, plain.masks, X_S)
    assert not all(np.allclose(a, b) for a, b in zip(solo.weights, refit.network.weights))
    assert "obs" in (out / "summary.txt").read_text() and "sipp-hybrid+ls" in (out / "summary.txt").read_text()


def test_refit_methods_in_retrain_iterative_and_during_modes(tmp_path):
    cfg = tiny_config(mode="iterative", methods=["magnitude-global+ls", "obs"], seeds=[0], keeps=[0.6, 0.3],
                      calibration=20, lottery=True, lottery_method="wanda+ls", lottery_keeps=[0.3])
    res, _ = run_tiny(tmp_path, cfg)
    for r in res.rows:
        if r["method"] != "dense":  # no refit revives a pruned weight: every cascade step keeps its count
            assert r["kept_weights"] == round(r["keep"] * r["total_weights"])
    assert {r["method"] for r in res.rows if r["mode"] == "lottery"} == {"wanda+ls", "random"}
    res2, _ = run_tiny(tmp_path, tiny_config(methods=["sipp-det+ls"], seeds=[0], keeps=[0.3], calibration=0), "rt")
    row = [r for r in res2.rows if r["method"] == "sipp-det+ls"][0]
    assert row["mode"] == "retrain" and row["kept_weights"] == round(0.3 * row["total_weights"])
    res3, _ = run_tiny(tmp_path, tiny_config(mode="during", methods=["wanda+ls"], seeds=[0], keeps=[0.3], epochs=5,
                                             calibration=20), "during")
    assert [r["method"] for r in res3.rows if r["mode"] == "during"] == ["dense", "wanda+ls"]


def test_comparison_of_two_methods_on_hand_made_rows():
    from sparsify.experiment.refit import compare, format_comparison

    rows = hand_rows()
    gaps = compare(rows, "a", "b")
    assert sorted(gaps) == [0.1, 0.5]  # keep 0.2 only a has
    np.testing.assert_allclose([gaps[0.5], gaps[0.1]], [0.91 - 0.87, 0.82 - 0.895])
    text = format_comparison(rows, "a", "b")
    assert "worst -7.5 at keep 0.1" in text and "0.5: +4.0" in text  # mean (4.0 - 7.5) / 2 = -1.75
    assert "no kept fraction in common" in format_comparison(rows, "a", "missing")
