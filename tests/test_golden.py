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
    with pytest.raises(AssertionError, match=rf"step 'weight' \(rand\), layer 0: 1 of .* \(exact\); first at index \({idx[0]}, {idx[1]}\)"):
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
