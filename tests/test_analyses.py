"""Analyses of the experiment: recall distortion, instability, undecayed pruning, imbalance, report."""
import csv
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsify import baselines as B
from sparsify import cli
from sparsify import data as D
from sparsify import experiment as E
from sparsify import train as T
from sparsify.experiment.during import segment_schedule
from sparsify.experiment.stability import prune_schedule


# --- recall distortion on hand-made confusion matrices ----------------------------------------
def test_intensification_slope_of_hand_made_confusion_matrices():
    from sparsify.experiment.analyses import accuracy_from_confusion, recall_from_confusion

    before = [[6, 4], [0, 10]]                       # recalls 0.6, 1.0; accuracy 0.8; relative 0.75, 1.25
    after = [[4, 6], [0, 10]]                        # recalls 0.4, 1.0; accuracy 0.7
    rb, ra = recall_from_confusion(before), recall_from_confusion(after)
    ab, aa = accuracy_from_confusion(before), accuracy_from_confusion(after)
    np.testing.assert_allclose(rb, [0.6, 1.0])
    assert ab == pytest.approx(0.8) and aa == pytest.approx(0.7)
    # relative recall after: 4/7 and 10/7; change +-(10/7 - 5/4) = +-5/28 against d = -+1/4 -> slope 5/7
    assert E.intensification_slope(rb, ab, ra, aa) == pytest.approx(5 / 7)
    # the pruned model treats both classes alike: every deviation is undone, slope -1
    even = [[8, 2], [2, 8]]
    assert E.intensification_slope(rb, ab, recall_from_confusion(even), accuracy_from_confusion(even)) == \
        pytest.approx(-1.0)
    # recall scaled uniformly (relative recall unchanged): no distortion
    assert E.intensification_slope([0.6, 1.0], 0.8, [0.3, 0.5], 0.4) == pytest.approx(0.0)
    # no spread before: undefined
    assert math.isnan(E.intensification_slope([0.9, 0.9], 0.9, [0.5, 1.0], 0.75))
    # intensified fraction: both classes moved away from 1 on their own side; both evened out; no change
    assert E.intensified_fraction(rb, ab, ra, aa) == 1.0
    assert E.intensified_fraction(rb, ab, recall_from_confusion(even), accuracy_from_confusion(even)) == 0.0
    assert E.intensified_fraction([0.6, 1.0], 0.8, [0.3, 0.5], 0.4) == 0.5
    assert math.isnan(E.intensified_fraction([0.9, 0.9], 0.9, [0.5, 1.0], 0.75))


def test_three_classes_and_an_absent_class():
    # relative recalls before 0.5, 1, 1.5 (accuracy 0.6), after 0.25, 1, 1.75 (accuracy 0.6): slope 0.5
    rb = np.array([0.3, 0.6, 0.9, np.nan])
    ra = np.array([0.15, 0.6, 1.05, np.nan])
    assert E.intensification_slope(rb, 0.6, ra, 0.6) == pytest.approx(0.5)
    # the middle class sits at 1 and does not count; the two others intensified
    assert E.intensified_fraction(rb, 0.6, ra, 0.6) == 1.0


def test_instability_of_hand_made_confusion_matrices():
    from sparsify.experiment.analyses import accuracy_from_confusion

    before = accuracy_from_confusion([[9, 1], [1, 9]])   # 0.9
    after = accuracy_from_confusion([[6, 4], [2, 8]])    # 0.7
    assert E.instability(before, after) == pytest.approx(0.2 / 0.9)
    assert E.instability(0.5, 0.6) == pytest.approx(-0.2)   # a prune that helps is negative
    assert math.isnan(E.instability(0.0, 0.0))


def test_t_interval_and_spearman():
    mean, low, high, n = E.t_interval([1.0, 2.0, 3.0, float("nan")])
    half = 4.302653 / math.sqrt(3)                           # t(0.975, 2 dof) from a table, sd = 1
    assert (mean, n) == (2.0, 3) and low == pytest.approx(2 - half, rel=1e-5) and high == pytest.approx(2 + half, rel=1e-5)
    assert math.isnan(E.t_interval([0.5])[1])
    assert E.spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert E.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    rho, low, high, n = E.bootstrap_spearman([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5], n_boot=200)
    assert n == 6 and low <= rho <= high and rho == pytest.approx(1 - 6 * 6 / (6 * 35))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=3, max_size=12))
def test_spearman_matches_scipy_with_ties(pairs):
    from scipy.stats import spearmanr

    x, y = np.array(pairs, dtype=float).T
    ours = E.spearman(x, y)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


# --- undecayed pruning ------------------------------------------------------------------------
def test_undecayed_score_matches_finite_differences():
    net = T.init_mlp([5, 4, 3], rng=0)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((7, 5)), rng.integers(0, 3, 7)
    lam = 0.01
    got = B.undecayed_scores(net, X, y, weight_decay=lam)
    h = 1e-6
    for layer, w in enumerate(net.weights):
        for i, j in [(0, 0), (w.shape[0] - 1, w.shape[1] - 1), (1, 2)]:
            def loss(delta):
                ws = [v.copy() for v in net.weights]
                ws[layer][i, j] += delta
                return T.cross_entropy(net.with_weights(ws), X, y)
            grad = (loss(h) - loss(-h)) / (2 * h)          # data loss only, no decay term
            expected = abs(-w[i, j] * grad + lam * w[i, j] ** 2)
            assert got[layer][i, j] == pytest.approx(expected, rel=1e-5, abs=1e-10)


def test_undecayed_prunes_the_smallest_scores_globally_and_needs_labels():
    net = T.init_mlp([6, 5, 3], rng=2)
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((9, 6)), rng.integers(0, 3, 9)
    res = B.prune_baseline(net, X, keep=0.25, method="undecayed", y_S=y, weight_decay=5e-4)
    sc = np.concatenate([s.ravel() for s in B.undecayed_scores(net, X, y, 5e-4)])
    kept = np.concatenate([m.ravel() for m in res.masks])
    assert kept.sum() == round(0.25 * net.n_weights)
    assert sc[kept].min() >= sc[~kept].max()
    with pytest.raises(ValueError, match="y_S"):
        B.prune_baseline(net, X, keep=0.25, method="undecayed")
    with pytest.raises(ValueError, match="weight_decay"):
        B.undecayed_scores(net, X, y, weight_decay=-1.0)


# --- imbalance -----------------------------------------------------------------------------------
def test_imbalance_subsamples_training_classes_only():
    ds = D.make_generated(600, rng=0)
    imb = E.imbalance_dataset(ds, E.parse_imbalance("3,5:10"), seed=0)
    for split in ("X_val", "y_val", "X_test", "y_test"):
        assert getattr(imb, split) is getattr(ds, split)        # the very same arrays, untouched
    before, after = np.bincount(ds.y_train, minlength=10), np.bincount(imb.y_train, minlength=10)
    for c in range(10):
        assert after[c] == (math.ceil(before[c] / 10) if c in (3, 5) else before[c])
    # every kept training point is one of the original ones, with its label
    rows = {tuple(x): label for x, label in zip(ds.X_train, ds.y_train)}
    assert all(rows[tuple(x)] == label for x, label in zip(imb.X_train, imb.y_train))
    with pytest.raises(ValueError, match="imbalance: class"):
        E.imbalance_dataset(ds, {"classes": [12], "factor": 2}, seed=0)


@pytest.mark.parametrize("bad", ["3,5", "a:2", "3:0.5", "3,3:2", {"classes": [1]}, 5])
def test_imbalance_spellings_are_checked(bad):
    with pytest.raises((ValueError, TypeError), match="imbalance"):
        E.parse_imbalance(bad)


def test_imbalance_in_toml_and_flags(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('imbalance = {classes = [5, 3], factor = 10}\nanalyses = ["stability", "recall"]\n')
    cfg = E.ExperimentConfig.from_dict(E.load_config(path), source=str(path))
    assert cfg.imbalance == {"classes": [3, 5], "factor": 10} and cfg.analyses == ["recall", "stability"]
    assert E.ExperimentConfig().to_dict() == {k: v for k, v in cfg.to_dict().items()
                                              if k not in ("imbalance", "analyses")}
    with pytest.raises(ValueError, match="--analyses"):
        E.ExperimentConfig.from_dict({"analyses": "recall,nope"}, names={"analyses": "--analyses"})


# --- the during schedule ---------------------------------------------------------------------------
def test_prune_schedule_and_segments_follow_the_full_schedule():
    ks = prune_schedule(0.1, 4)
    assert ks[-1] == pytest.approx(0.1) and all(a > b for a, b in zip([1.0] + ks, ks))
    full = dict(epochs=10, batch_size=8, lr=0.1, momentum=0.9, weight_decay=0.0, milestones=[3, 7], gamma=0.5)
    lr_full = [0.1 * 0.5 ** sum(m <= e for m in [3, 7]) for e in range(10)]
    for start, stop in [(0, 2), (2, 4), (4, 8), (8, 10)]:
        seg = segment_schedule(full, start, stop)
        lr_seg = [seg["lr"] * 0.5 ** sum(m <= e for m in seg["milestones"]) for e in range(seg["epochs"])]
        np.testing.assert_allclose(lr_seg, lr_full[start:stop])


# --- a tiny run: new columns, report byte for byte, old files ------------------------------------------
TINY = dict(data="generated", hidden=[8], epochs=3, milestones=[2], retrain_epochs=1, retrain_milestones=[],
            methods=["magnitude-global", "undecayed"], keeps=[0.5, 0.2], seeds=[0, 1], lottery=False,
            batch_size=128, analyses=["recall", "stability"])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = {}
    for mode in ("iterative", "during"):
        folder = tmp_path_factory.mktemp(mode)
        cfg = E.ExperimentConfig.from_dict(dict(TINY, mode=mode, prune_every=1))
        E.run_experiment(cfg, folder, log=io.StringIO(), plots=False)
        out[mode] = folder
    return out


def test_new_columns_are_recorded(tiny_runs):
    rows = E.read_results_csv(tiny_runs["during"] / "results.csv")
    pruned = [r for r in rows if r["method"] != "dense"]
    assert len(pruned) == 2 * 2 * 2
    for r in rows:
        assert 0 <= r["train_accuracy"] <= 1
    for r in pruned:
        assert r["kept_weights"] == round(r["keep"] * r["total_weights"])   # the target is reached
        assert math.isfinite(r["instability"]) and 0 <= r["accuracy_before_prune"] <= 1
    chain = sorted((r for r in E.read_results_csv(tiny_runs["iterative"] / "results.csv")
                    if r["method"] == "undecayed" and r["seed"] == 0), key=lambda r: -r["keep"])
    steps = [E.instability(r["accuracy_before_prune"], r["accuracy_after_prune"]) for r in chain]
    # a cascade row records the mean instability of its steps so far
    assert chain[0]["instability"] == pytest.approx(steps[0])
    assert chain[1]["instability"] == pytest.approx(np.mean(steps))


def test_report_reproduces_the_tables_byte_for_byte(tiny_runs, capsys):
    folder = tiny_runs["iterative"]
    names = ("summary.txt", "recall.txt", "stability.txt", "results.json")
    before = {n: (folder / n).read_bytes() for n in names}
    assert b"Spearman" in before["stability.txt"] and b"intensification" in before["recall.txt"]
    for n in names[:-1]:  # results.json stays: it names the data the plots are titled with
        (folder / n).write_text("stale")
    assert cli.main(["report", str(folder), "--no-plots"]) == 0
    assert {n: (folder / n).read_bytes() for n in names} == before
    assert "Spearman" in capsys.readouterr().out


def test_report_on_an_older_results_file(tiny_runs, tmp_path, capsys):
    """A results.csv without the new columns reads with NaN there; the report says what is missing."""
    src = tiny_runs["during"]
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    with open(src / "results.csv", newline="") as fh:
        table = list(csv.reader(fh))
    keep = len(E.LEGACY_COLUMNS)
    with open(tmp_path / "results.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([line[:keep] for line in table])
    rows = E.read_results_csv(tmp_path / "results.csv")
    assert all(math.isnan(r["train_accuracy"]) and math.isnan(r["instability"]) for r in rows)
    assert cli.main(["report", str(tmp_path), "--no-plots"]) == 0
    assert "before these columns existed" in (tmp_path / "stability.txt").read_text()
    assert (tmp_path / "recall.txt").read_text().startswith("mode during")


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "config.json or results.csv" in capsys.readouterr().err


def test_a_resumed_cascade_averages_the_instability_of_its_recorded_steps(tiny_runs, tmp_path):
    """Resuming after step 0 of a cascade: the next row's instability also counts step 0's, from its row."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(tiny_runs["iterative"], folder)
    rows = E.read_results_csv(folder / "results.csv")
    E.write_results_csv(folder / "results.csv", [r for r in rows if r["keep"] != 0.2])
    for step1 in (folder / "networks").glob("chain-*-step1.npz"):   # pretend step 1 never finished
        step1.rename(step1.with_name(step1.name.replace("step1", "step0")))
    cfg = E.ExperimentConfig.from_dict(dict(TINY, mode="iterative", prune_every=1))
    E.run_experiment(cfg, folder, log=io.StringIO(), plots=False)
    back = {(r["method"], r["seed"], r["keep"]): r for r in E.read_results_csv(folder / "results.csv")}
    for method in TINY["methods"]:
        first, second = back[(method, 0, 0.5)], back[(method, 0, 0.2)]
        step0 = E.instability(first["accuracy_before_prune"], first["accuracy_after_prune"])
        step1 = E.instability(second["accuracy_before_prune"], second["accuracy_after_prune"])
        assert second["instability"] == pytest.approx((step0 + step1) / 2)
