"""Bad input to the experiment: refused up front with a clear message, and nothing is written."""
import io
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsify import allocation, baselines, bounds, cli
from sparsify import experiment as E
from sparsify.commands import experiment as command
from sparsify.experiment import folder as F
from sparsify.network import random_mlp
from sparsify.prune import METHODS as PRUNE_METHODS


def small(**overrides):
    values = dict(data="generated", hidden=[8], epochs=1, retrain_epochs=0, milestones=[], retrain_milestones=[],
                  methods=["random"], keeps=[0.5], seeds=[0], s_size=8, lottery=False, mode="oneshot")
    values.update(overrides)
    return E.ExperimentConfig.from_dict(values)


def tree(path):
    """Every path below ``path`` with the bytes of every file (what a refused run must not change)."""
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def cli_run(args, capsys):
    code = cli.main(["experiment", *args, "--no-plots", "--quiet"])
    return code, capsys.readouterr().err


# --- --out that cannot be written ---------------------------------------------------------
def test_out_that_is_a_file_or_lies_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "run"):
        code, err = cli_run(["--out", str(out), "--data", "generated"], capsys)
        assert code == 2
        assert err.startswith("sparsify experiment: error: --out:") and "choose another --out" in err
        assert "is a file" in err or "not a folder" in err
    assert blocker.read_text() == "keep me" and sorted(os.listdir(tmp_path)) == ["blocker"]


def test_out_without_write_permission_is_refused_and_nothing_is_created(tmp_path, capsys, monkeypatch):
    # root may write anywhere, so the permission answer of the operating system is simulated
    monkeypatch.setattr(F.os, "access", lambda path, mode: False)
    code, err = cli_run(["--out", str(tmp_path / "new" / "run"), "--data", "generated"], capsys)
    assert code == 2 and "--out:" in err and "is not writable" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_out_is_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = cli_run(["--out", str(ro / "run"), "--data", "generated"], capsys)
        assert code == 2 and "is not writable" in err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_failed_write_of_config_json_leaves_no_folder_behind(tmp_path, monkeypatch):
    def refuse(path, write, name="out"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(F, "atomic_write", refuse)
    with pytest.raises(ValueError, match=r"out: could not write .*config\.json.*Permission denied"):
        E.run_experiment(small(), tmp_path / "a" / "b", log=io.StringIO(), plots=False)
    assert list(tmp_path.iterdir()) == []


# --- a run folder holding something else ---------------------------------------------------
def started(tmp_path, cfg):
    """A run folder with this run's config.json, as a run leaves it before its first cell."""
    out = tmp_path / "run"
    F.prepare_out(out, cfg.to_dict())
    return out


@pytest.mark.parametrize("payload", ["[1, 2]", '"text"', "3"])
def test_config_json_that_is_not_an_object_is_refused(tmp_path, payload):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(payload)
    before = tree(out)
    with pytest.raises(ValueError, match=r"config\.json' holds a JSON \w+, not an object of settings"):
        E.run_experiment(small(), out, log=io.StringIO(), plots=False)
    assert tree(out) == before


def test_results_csv_that_is_a_folder_is_refused(tmp_path):
    cfg = small()
    out = started(tmp_path, cfg)
    (out / "results.csv").mkdir()
    before = tree(out)
    with pytest.raises(ValueError, match=r"results\.csv' should be a file but is not"):
        E.run_experiment(cfg, out, log=io.StringIO(), plots=False)
    with pytest.raises(ValueError, match=r"results\.csv' is not a regular file"):
        E.read_results_csv(out / "results.csv")
    assert tree(out) == before


# --- results.csv is checked when a run resumes ----------------------------------------------
def good_row(method="random", keep=0.5, seed=0, acc=0.9):
    return dict(method=method, mode="oneshot", keep=keep, seed=seed, test_accuracy=acc, accuracy_after_prune=acc,
                drop_after_prune=0.01, kept_weights=5, total_weights=10, keep_achieved=0.5, prune_seconds=0.1,
                retrain_seconds=0.0, kept_per_layer=[3, 2], total_per_layer=[6, 4], sampled_sides=0, det_sides=0,
                dead_sides=0, allocation="global", s_size=8, per_class_recall=[1.0, float("nan")])


def write_lines(path, *rows, tail=b""):
    E.write_results_csv(path, list(rows))
    path.write_bytes(path.read_bytes() + tail)


def test_a_clean_file_reads_back_and_only_an_unfinished_last_line_is_dropped(tmp_path):
    path = tmp_path / "results.csv"
    # the interrupted append cut a multi-byte character in half: still only the unfinished line is dropped
    write_lines(path, good_row(), good_row(keep=0.2, acc=0.7), tail="dense,oneshot,1.0,0,0.9,\u00b5".encode()[:-1])
    rows = E.read_results_csv(path)
    assert [(r["keep"], r["test_accuracy"]) for r in rows] == [(0.5, 0.9), (0.2, 0.7)]


@pytest.mark.parametrize("damage, problem", [
    (lambda rows, text: text + text.splitlines(keepends=True)[2], r"line 4: cell .* is already recorded on line 3"),
    (lambda rows, text: text.replace("random,oneshot,0.2", "random,oneshot,0.\xff2"), r"line 3: .*is not UTF-8"),
    (lambda rows, text: text.replace(",0.7,0.7,", ",7.5,0.7,"), r"line 3: column test_accuracy: 7\.5 is outside \[0, 1\]"),
    (lambda rows, text: text.replace(",0.7,0.7,", ",0.7,-0.5,"),
     r"line 3: column accuracy_after_prune: -0\.5 is outside \[0, 1\]"),
    (lambda rows, text: text.replace("random,oneshot,0.2", "random,oneshot,abc"), r"line 3: column keep: 'abc' is not"),
    (lambda rows, text: text.replace(",test_accuracy,", ","), r"line 1: the header lacks column\(s\) \['test_accuracy'\]"),
    (lambda rows, text: text + "random,oneshot,0.1,0\n", r"line 4: has 4 field\(s\), expected 23"),
    (lambda rows, text: text.replace("random,oneshot,0.2", "sipp,oneshot,0.2"), r"line 3: column method: unknown"),
    (lambda rows, text: text.replace(",1.0;nan", ",1.0;3.0", 1), r"line 2: column per_class_recall: 3\.0 is outside"),
])
def test_damaged_results_csv_is_refused_naming_file_line_and_problem(tmp_path, damage, problem):
    path = tmp_path / "results.csv"
    rows = [good_row(), good_row(keep=0.2, acc=0.7)]
    E.write_results_csv(path, rows)
    text = path.read_text(encoding="utf-8")
    damaged = damage(rows, text)
    path.write_bytes(damaged.encode("latin-1") if "\xff" in damaged else damaged.encode("utf-8"))
    with pytest.raises(ValueError, match=r"results\.csv', " + problem):
        E.read_results_csv(path)


def test_a_run_refuses_to_resume_from_a_damaged_file_and_changes_nothing(tmp_path):
    cfg = small()
    out = started(tmp_path, cfg)
    write_lines(out / "results.csv", good_row(acc=7.5))
    before = tree(out)
    with pytest.raises(ValueError, match=r"line 2: column test_accuracy: 7\.5 is outside \[0, 1\]"):
        E.run_experiment(cfg, out, log=io.StringIO(), plots=False)
    assert tree(out) == before


# --- cached networks ---------------------------------------------------------------------------
def test_a_cached_network_of_the_wrong_shape_is_called_a_stale_cache_file(tmp_path):
    cfg = small()
    out = started(tmp_path, cfg)
    (out / "networks").mkdir()
    stale = out / "networks" / "dense-seed0.npz"
    from sparsify.io import save

    save(random_mlp([64, 5, 10], rng=0, output_activation="identity"), stale)  # hidden 5, the run has 8
    with pytest.raises(ValueError, match=r"cached network .*dense-seed0\.npz' is stale or from another run.*"
                                         r"delete it \(rm "):
        E.run_experiment(cfg, out, log=io.StringIO(), plots=False)
    assert stale.exists() and not (out / "results.csv").exists()  # refused before anything was written


# --- settings checked up front ---------------------------------------------------------------
@pytest.mark.parametrize("seeds, exc", [(-2, ValueError), (0, ValueError), ([], ValueError), ([0, -1], ValueError),
                                        ([0, 1.5], TypeError), (True, TypeError), ("0,1", TypeError)])
def test_bad_seeds_are_reported_as_given(seeds, exc):
    with pytest.raises(exc, match=r"seeds: must be a positive integer or a list of non-negative integers, got"
                                  + (r" -2; e\.g\. seeds = 3" if seeds == -2 else "")):
        E.ExperimentConfig.from_dict({"seeds": seeds})


def test_seeds_count_and_list_are_accepted():
    assert E.ExperimentConfig.from_dict({"seeds": 2}).seeds == [0, 1]
    assert E.ExperimentConfig.from_dict({"seeds": [3, 1, 3]}).seeds == [3, 1]


def test_s_size_larger_than_the_data_is_refused_before_training_under_the_flag_name(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli_run(["--out", str(out), "--data", "generated", "--hidden", "8", "--epochs", "1",
                         "--s-size", "100000", "--seeds", "0", "--keeps", "0.5", "--methods", "random"], capsys)
    assert code == 2
    assert "error: --s-size: S is drawn from the validation split, which has only" in err
    assert "pass a smaller --s-size" in err and "s_size" not in err
    assert not out.exists()  # no config.json, no folder


def test_settings_from_a_file_are_named_with_the_file(tmp_path, capsys):
    toml = tmp_path / "exp.toml"
    toml.write_text('data = "generated"\ns_size = 100000\nhidden = [8]\n')
    code, err = cli_run([str(toml), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and f"s_size (in {toml})" in err and not (tmp_path / "run").exists()
    toml.write_text("momentum = 2.0\n")
    code, err = cli_run([str(toml), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and f"momentum (in {toml}): must be in [0, 0.999], got 2.0" in err


@pytest.mark.parametrize("flags, message", [
    (["--momentum", "2"], "--momentum: must be in [0, 0.999], got 2.0"),
    (["--batch-size", "0"], "--batch-size: must be in [1, inf), got 0"),
    (["--keep-min", "0.5", "--keep-max", "0.2"], "--keep-min: must not exceed --keep-max (0.2), got 0.5"),
    (["--lottery-method", "nope"], "--lottery-method: must be one of"),
    (["--data", "imagenet"], "--data: must be one of ['digits', 'generated'] or 'mnist:DIR'"),
    (["--seeds", ","], "--seeds: must be a positive integer or a list of non-negative integers, got an empty"),
    (["--activation", "swish"], "--activation: must be one of"),
    (["--lr", "nan"], "--lr: must be a finite number, got nan"),
    (["--calibration", "-1"], "--calibration: must be in [0, inf), got -1"),
    (["--lam", "0"], "--lam: must be in (0, inf), got 0.0"),
    (["--lam=-1e-3"], "--lam: must be in (0, inf), got -0.001"),
    (["--methods", "sipp-hybrid,foo+ls"], "--methods: 'foo+ls' refits the unknown base method 'foo'"),
    (["--methods", "obs+ls+ls"], "--methods: 'obs+ls+ls' refits the unknown base method 'obs+ls'"),
    (["--lottery-method", "nope+ls"], "--lottery-method: 'nope+ls' refits the unknown base method 'nope'"),
])
def test_flag_errors_name_the_flag(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    code, err = cli_run(["--out", str(out), *flags], capsys)
    assert code == 2 and message in err, err
    assert not out.exists()


def test_cli_flag_names_use_dashes_and_the_verify_batch_flag():
    args = type("Args", (), {"first_seed": 0, "s_size": 0})()
    assert cli._flag_names("first_seed: must be a non-negative integer, got -1.", args).startswith("--first-seed:")
    assert cli._flag_names("s_size: too big", args) == "--s-size: too big"
    assert cli._flag_names("X_T: contains 1 NaN", args) == "--test: contains 1 NaN"


# --- the CLI takes its names and defaults from the package's constants --------------------------
def test_methods_and_defaults_come_from_the_package_constants():
    cfg = E.ExperimentConfig()
    assert cfg.delta == bounds.DEFAULT_DELTA and cfg.C == bounds.DEFAULT_C
    assert E.BASELINE_METHODS == tuple(baselines.METHODS)
    for rule, alloc in E.SIPP_METHODS.values():
        assert rule in PRUNE_METHODS and (alloc is None or alloc in allocation.ALLOCATIONS)
    # the position of a method seeds its random numbers: a new order would change every result
    assert E.METHODS == ("sipp-det", "sipp-rand", "sipp-hybrid", "sipp-det-balanced", "magnitude-global",
                         "magnitude-layer", "random", "snip", "wanda", "undecayed")
    # a refit method draws the random numbers of its base (it refits that very mask); obs has its own
    from sparsify.experiment import refit

    assert E.REFIT_METHODS[:len(E.METHODS)] == tuple(m + "+ls" for m in E.METHODS)
    assert [refit.method_id(m) for m in E.METHODS] == list(range(len(E.METHODS)))
    assert [refit.method_id(m + "+ls") for m in E.METHODS] == list(range(len(E.METHODS)))
    assert refit.method_id("obs") == refit.method_id("obs+ls") == refit.OBS_ID > len(E.METHODS)
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["experiment"]
    helps = {a.dest: a.help for a in sub._actions}
    assert f"{bounds.DEFAULT_DELTA:g}" in helps["delta"] and f"{bounds.DEFAULT_C:g}" in helps["C"]
    assert all(m in helps["methods"] for m in E.METHODS) and all(m in helps["mode"] for m in E.MODES)
    from sparsify.commands import demo

    assert demo.REPORT_METHOD in E.METHODS
    assert {key for key, _, _ in command.FLAGS.values()} | {"lottery"} == set(E.ExperimentConfig.keys())


def test_config_json_holds_exactly_the_settings(tmp_path):
    cfg = small()
    out = started(tmp_path, cfg)
    saved = json.loads((out / "config.json").read_text())
    # settings added later (imbalance, analyses, prune_every, model, calibration, lam) are left out at their defaults
    later = {"imbalance", "analyses", "prune_every", "model", "calibration", "lam"}
    assert sorted(saved) == sorted(set(E.ExperimentConfig.keys()) - later) and "labels" not in saved
    assert saved["seeds"] == [0] and np.isclose(saved["delta"], bounds.DEFAULT_DELTA)


# --- property: what is written reads back unchanged; an accuracy outside [0, 1] never does -------
unit = st.floats(0.0, 1.0)


@settings(max_examples=30)
@given(acc=unit, after=unit, recall=st.lists(st.one_of(unit, st.just(float("nan"))), min_size=1, max_size=4),
       kept=st.lists(st.integers(0, 50), min_size=1, max_size=3), seed=st.integers(0, 2**31),
       bad=st.one_of(st.floats(1.0, 1e9, exclude_min=True), st.floats(-1e9, 0.0, exclude_max=True)))
def test_rows_round_trip_and_out_of_range_accuracy_is_refused(tmp_path_factory, acc, after, recall, kept, seed, bad):
    path = tmp_path_factory.mktemp("csv") / "results.csv"
    total = [k + 3 for k in kept]
    row = dict(good_row(seed=seed, acc=acc), accuracy_after_prune=after, per_class_recall=recall,
               kept_per_layer=kept, total_per_layer=total, kept_weights=sum(kept), total_weights=sum(total))
    E.write_results_csv(path, [row])
    (back,) = E.read_results_csv(path)
    assert {k: back[k] for k in row if k != "per_class_recall"} == {
        k: v for k, v in row.items() if k != "per_class_recall"}
    np.testing.assert_array_equal(back["per_class_recall"], recall)  # NaN where NaN, the same bits elsewhere
    E.write_results_csv(path, [dict(row, test_accuracy=bad)])
    with pytest.raises(ValueError, match=r"line 2: column test_accuracy: .* is outside \[0, 1\]"):
        E.read_results_csv(path)


# --- refit methods: calibration larger than the training split; older run folders ------------------
def test_calibration_larger_than_the_training_split_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli_run(["--out", str(out), "--data", "generated", "--methods", "random,wanda+ls",
                         "--calibration", "5000", "--keeps", "0.5", "--epochs", "1"], capsys)
    assert code == 2 and "--calibration: the refit methods ['wanda+ls'] draw their extra calibration points" in err
    assert "only 1200 points" in err and "at most 1200" in err, err
    assert not out.exists()
    # the lottery panel's method counts too; in a TOML file the message names the file
    toml = tmp_path / "exp.toml"
    toml.write_text('data = "generated"\nmethods = ["random"]\nlottery_method = "obs"\ncalibration = 1201\n')
    code, err = cli_run([str(toml), "--out", str(out)], capsys)
    assert code == 2 and f"calibration (in {toml}): the refit methods ['obs']" in err and not out.exists()


def test_a_run_folder_from_before_the_refit_settings_resumes(tmp_path):
    cfg = small()
    out = started(tmp_path, cfg)
    saved = json.loads((out / "config.json").read_text())
    assert "calibration" not in saved and "lam" not in saved  # at their defaults: as an older folder holds it
    F.prepare_out(out, small(calibration=1000, lam=1e-4).to_dict())  # the defaults, spelled out: accepted
    with pytest.raises(ValueError, match=r"differs in \['lam'\]"):
        F.prepare_out(out, small(lam=0.5).to_dict())
    other = started(tmp_path / "b", small(calibration=10))
    assert json.loads((other / "config.json").read_text())["calibration"] == 10
