"""``sparsify demo --quick``: the digits preset end to end, and its fallback without scikit-learn."""
import sys

import pytest

from sparsify import cli
from sparsify import experiment as E
from sparsify.commands import demo


def test_quick_demo_runs_and_writes_results(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-plots"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    for method in E.DEFAULT_METHODS:  # the demo runs the default methods (undecayed is opt-in)
        assert method in text
    assert "PR@0.5pp" in text and "mode lottery" in text
    assert "SiPP hybrid at keep 0.1" in text and "kept/total" in text  # the hybrid report table
    assert "[  30/30]" in captured.err  # progress on stderr
    rows = E.read_results_csv(out / "results.csv")
    preset = demo.preset(quick=True)
    n_main = len(E.DEFAULT_METHODS) * len(preset["keeps"]) + 1
    assert len(rows) == n_main + 2 * len(preset["lottery_keeps"])
    dense = [r for r in rows if r["method"] == "dense"]
    assert len(dense) == 1 and dense[0]["test_accuracy"] > 0.9  # digits is easy for a 300-100 MLP
    hybrid = [r for r in rows if r["method"] == "sipp-hybrid" and r["mode"] == "retrain"]
    assert all(r["kept_weights"] == round(r["keep"] * r["total_weights"]) for r in hybrid)
    for name in ("results.json", "summary.txt", "config.json"):
        assert (out / name).is_file()


def test_demo_falls_back_to_generated_data_without_scikit_learn(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "notice: scikit-learn is not installed" in err
    assert '"data": "generated"' in (out / "config.json").read_text()


def test_demo_preset_is_a_valid_configuration():
    full = E.ExperimentConfig.from_dict(demo.preset(quick=False))
    assert full.hidden == [300, 100] and len(full.seeds) == 3 and full.mode == "retrain"
    assert demo.REPORT_KEEP in full.keep_grid()
    with pytest.raises(ValueError, match="--seed: must be a non-negative integer"):
        demo.preset(quick=True, seed=-1)


def test_oneshot_preset_adds_refit_methods_on_the_full_demo_networks():
    full, one = demo.preset(quick=False), demo.preset(quick=False, oneshot=True)
    cfg = E.ExperimentConfig.from_dict(one)
    assert cfg.mode == "oneshot" and not cfg.lottery and cfg.calibration == 1000
    assert cfg.methods == list(E.DEFAULT_METHODS) + ["sipp-hybrid+ls", "magnitude-global+ls", "wanda+ls", "obs"]
    assert cfg.keep_grid() == [0.5, 0.3, 0.2, 0.1, 0.05]
    # the same reference networks as the retrain demo: same widths, schedule and seeds
    for key in ("hidden", "epochs", "milestones", "seeds"):
        assert one[key] == full[key], key
    quick = E.ExperimentConfig.from_dict(demo.preset(quick=True, seed=4, oneshot=True))
    assert quick.seeds == [4] and demo.REPORT_KEEP in quick.keep_grid() and len(quick.keep_grid()) == 3


def test_oneshot_demo_prints_the_refit_table_and_the_comparison(tmp_path, capsys, monkeypatch):
    pytest.importorskip("sklearn")
    original = demo.preset

    def small(quick, seed=0, data="digits", oneshot=False):  # the same run on a small network, for speed
        return dict(original(quick, seed, data, oneshot), hidden=[24], epochs=3, milestones=[], calibration=200)

    monkeypatch.setattr(demo, "preset", small)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--oneshot", "--quick", "--out", str(out), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "mode oneshot" in text and "mode retrain" not in text and "mode lottery" not in text
    for method in list(E.DEFAULT_METHODS) + ["sipp-hybrid+ls", "magnitude-global+ls", "wanda+ls", "obs"]:
        assert method in text
    assert "sipp-hybrid+ls vs magnitude-global (oneshot, test accuracy, points): mean" in text
    assert "SiPP hybrid with the refit at keep 0.1" in text and "refit on" in text
    rows = E.read_results_csv(out / "results.csv")
    assert len(rows) == 1 + 13 * 3 and {r["mode"] for r in rows} == {"oneshot"}
