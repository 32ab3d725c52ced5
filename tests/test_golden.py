"""Golden vectors (sparsify.testing.golden): the shipped files, the checkers, and docs/porting.md §12."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sparsify.testing import golden

PORTING = Path(__file__).resolve().parents[1] / "docs" / "porting.md"


@pytest.mark.parametrize("case", golden.CASES)
def test_package_reproduces_every_shipped_case(case):
    golden.reproduce(case)  # raises AssertionError naming the step on any difference


def test_shipped_files_are_small_plain_and_exercise_every_path():
    paths = [golden.DATA_DIR / f"{case}.npz" for case in golden.CASES]
    assert sum(p.stat().st_size for p in paths) < 200_000
    for case in golden.CASES:
        data = golden.load(case)
        assert all(a.dtype != object for a in data.values())
        assert data["layer.0.weight"].dtype == np.dtype(case.split("-")[1])
        assert any((w == 0).any() for k, w in data.items() if k.endswith(".weight") and k.startswith("layer."))
        rand_draws = golden.expected(case, "draws", "rand", data)
        assert sum(int((d > 0).sum()) for d in rand_draws) > 0  # the sampler is exercised
        assert sum(int(d.sum()) for d in golden.expected(case, "draws", "det", data)) == 0
    hybrid = golden.expected("dense-float64", "draws", "hybrid")
    sampled = sum(int((d > 0).sum()) for d in hybrid)
    assert 0 < sampled < sum(d.size for d in hybrid)  # the hybrid rule decides both ways


def test_checkers_name_case_step_layer_and_first_index():
    case = "dense-float64"
    data = golden.load(case)
    t = [a.copy() for a in golden.expected(case, "targets", "balanced", data)]
    golden.check_targets(case, t, "balanced", data=data)
    t[1][2, 1] += 1
    with pytest.raises(AssertionError, match=r"dense-float64, step 'targets' \(balanced\), layer 1: .*index \(2, 1\)"):
        golden.check_targets(case, t, "balanced", data=data)
    w = [a.copy() for a in golden.expected(case, "weight", "rand", data)]
    k, idx = 0, tuple(np.argwhere(w[0] != 0)[3])
    w[k][idx] = np.nextafter(w[k][idx], np.inf)  # one ulp: the exact steps notice
    where = rf"step 'weight' \(rand\), layer 0: 1 of .* \(exact\); first at index \({idx[0]}, {idx[1]}\)"
    with pytest.raises(AssertionError, match=where):
        golden.check_run(case, "rand", weight=w, data=data)
    with pytest.raises(AssertionError, match="step 'uniforms'"):
        golden.check_run(case, "hybrid", uniforms=golden.expected(case, "uniforms", "hybrid", data)[:-1], data=data)
    with pytest.raises(AssertionError, match="expected a list of 3 arrays"):
        golden.check_run(case, "det", mask=golden.expected(case, "mask", "det", data)[:2], data=data)


@pytest.mark.parametrize("case", ["dense-float64", "conv-float32"])
def test_sensitivity_tolerance_is_per_dtype(case):
    s = golden.expected(case, "sensitivity", "max")
    rtol = golden.TOLERANCES["sensitivity"][case.split("-")[1]][0]
    golden.check_sensitivities(case, [a * (1 + rtol / 10) for a in s], "max")
    bad = [a.copy() for a in s]
    j = tuple(np.argwhere(bad[2] > 0.1)[0])
    bad[2][j] *= 1 + 10 * rtol
    with pytest.raises(AssertionError, match=rf"step 'sensitivity' \(max\), layer 2: .*index \({j[0]}, {j[1]}\)"):
        golden.check_sensitivities(case, bad, "max")


def test_bad_arguments():
    with pytest.raises(ValueError, match="case: must be one of"):
        golden.load("mlp-float16")
    with pytest.raises(ValueError, match="variant"):
        golden.expected("dense-float64", "mask", "magnitude")
    with pytest.raises(TypeError, match="check_run"):
        golden.check_run("dense-float64", "det", masks=[])
    assert golden.main(["frobnicate"]) == 2


def _section_blocks() -> list[str]:
    text = PORTING.read_text(encoding="utf-8")
    section = text[text.index("## 12."):]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M)


@pytest.mark.parametrize("case", ["conv-float64", "dense-float32"])
def test_porting_section_runs(case):
    blocks = _section_blocks()
    assert len(blocks) >= 3 and sum(b.count("golden.check_") for b in blocks) >= 4
    namespace: dict = {"__name__": "__porting__"}
    for k, block in enumerate(blocks):
        block = block.replace('case = "conv-float64"', f'case = "{case}"')
        exec(compile(block, f"{PORTING.name}[§12 block {k}]", "exec"), namespace)  # noqa: S102
    assert namespace["case"] == case


_MARGIN = 1e-9


def _relative_gap(a, b):
    return np.abs(np.asarray(a, float) - np.asarray(b, float)) / np.maximum(np.abs(np.asarray(b, float)), 1e-300)


@pytest.mark.parametrize("case", golden.CASES)
def test_libm_dependent_decisions_are_far_from_their_boundaries(case):
    """The exact steps that pass through exp/log/sqrt (balanced targets, the hybrid rule, draw
    counts) sit well away from a rounding boundary, so a libm that differs in the last bit
    elsewhere cannot flip them. Such a libm moves these values by about 1e-15 relative, and the
    bisection on log lambda (stopped at 1e-13) by about 1e-12; the margins required are 1e-9."""
    from sparsify import allocation as alloc
    from sparsify.bounds import DEFAULT_C, DEFAULT_DELTA, alpha, patch_sizes
    from sparsify.prune import _Plan
    from sparsify.sampling import expected_unique

    data = golden.load(case)
    net = golden.network(case, data)
    budget = int(data["budget"])
    mats = [layer.weight_matrix for layer in net.prunable_layers]
    for run, opts in golden.RUNS.items():
        C, delta = opts.get("C", DEFAULT_C), opts.get("delta", DEFAULT_DELTA)
        stored = golden.expected(case, "sensitivity", opts["patch_reduction"], data)
        s = [a.reshape(W.shape) for a, W in zip(stored, mats)]
        plan = _Plan(mats, s, C, delta, patch_sizes(net))
        m = np.concatenate([t.ravel() for t in golden.expected(case, "target", run, data)])
        if opts["allocation"] == "balanced":
            a_side = alpha(C, delta, plan.P, plan.k)
            m_int, lam = alloc.balanced_targets(plan.mass, plan.nnz, plan.inv_eta, budget, C, delta,
                                                return_lambda=True, alpha_side=a_side)
            np.testing.assert_array_equal(m_int, m)
            live = (plan.mass > 0) & (plan.nnz > 0)
            cap = np.where(live, plan.nnz, 0).astype(float)
            m_cont = alloc._balanced_m(lam, a_side * plan.mass, plan.inv_eta, cap)
            inner = (m_cont > 0) & (m_cont < cap)
            frac = m_cont[inner] - np.floor(m_cont[inner])
            assert np.min(np.minimum(frac, 1 - frac)) > _MARGIN
            # the sides rounded up and the sides rounded down are separated by a gap in fractional
            # part, except exact ties between sides with the same inputs (equal everywhere; the
            # lower side index wins)
            up = (m > np.floor(m_cont))[inner]
            if up.any() and (~up).any():
                inputs = np.stack([(a_side * plan.mass)[inner], plan.inv_eta[inner], cap[inner]], axis=1)
                low = np.argmin(np.where(up, frac, np.inf))
                tied = ~up & (frac == frac[low])
                assert np.all(frac[~up & ~tied] < frac[low] - _MARGIN)
                assert np.all(inputs[tied] == inputs[low])
        _, _, flags = plan.plan(opts["method"], m)
        partial = (m > 0) & (m < plan.nnz) & ~plan.dead & (m < plan.support)
        if opts["method"] == "hybrid" and partial.any():
            assert np.min(_relative_gap(flags["eps_det"][partial], flags["eps_rand"][partial])) > _MARGIN
        # draw counts: replay the chunks of the sampler from the stored outcome
        draws = np.concatenate([d.ravel() for d in golden.expected(case, "draws", run, data)])
        kept = np.concatenate([alloc.side_sums(W, mk.reshape(W.shape)).ravel()
                               for W, mk in zip(mats, golden.expected(case, "mask", run, data))])
        idx = np.flatnonzero(draws > 0)
        carry, start = 0.0, 0
        while start < idx.size:
            size = max(1, (idx.size - start + 1) // 2)
            chunk = idx[start:start + size]
            start += size
            base = m[chunk].astype(float)
            target = np.clip(base * (1.0 + carry / base.sum()), 1e-9, plan.support[chunk] - 0.5)
            q = [plan._q(t) for t in chunk]
            one = target <= 1.0  # N = 1 by the rule itself, no rounding involved
            assert np.all(draws[chunk][one] == 1)
            above = expected_unique(q, draws[chunk]) - target
            below = target - expected_unique(q, draws[chunk] - 1)
            assert np.all((np.minimum(above, below) / target)[~one] > _MARGIN)
            carry += float(base.sum() - kept[chunk].sum())


def test_generate_writes_the_shipped_files_again(tmp_path, capsys):
    assert golden.main(["generate", str(tmp_path)]) == 0
    assert "dense-float64.npz" in capsys.readouterr().out
    for case in golden.CASES:
        new, old = golden.load(case, tmp_path), golden.load(case)
        assert sorted(new) == sorted(old)
        same_s = all(np.array_equal(new[k], old[k]) for k in old if k.startswith("sensitivity."))
        for key, want in old.items():
            if key.startswith("sensitivity."):
                rtol, atol = golden.TOLERANCES["sensitivity"][str(want.dtype)]
                np.testing.assert_allclose(new[key], want, rtol=rtol, atol=atol, err_msg=f"{case} {key}")
            elif same_s or key.split(".")[0] not in (*golden.RUNS, "targets"):
                np.testing.assert_array_equal(new[key], want, err_msg=f"{case} {key}")
