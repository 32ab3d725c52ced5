"""docs/tutorial.md runs: its Python blocks are executed in order in one namespace.

The page's own ``assert`` lines are the checks (the Σg = 1 identity, sensitivities by hand equal
``sp.sensitivity``, the det error bounded by the pruned mass, the sampling bound's failure rate);
this test fails when any of them, or any call on the page, breaks.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def _blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_tutorial_has_blocks_with_checks():
    blocks = _blocks(TUTORIAL.read_text(encoding="utf-8"))
    assert len(blocks) >= 6
    assert sum(b.count("assert ") for b in blocks) >= 8


def test_tutorial_runs_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__tutorial__"}
    for k, block in enumerate(_blocks(TUTORIAL.read_text(encoding="utf-8"))):
        code = compile(block, f"{TUTORIAL.name}[block {k}]", "exec")
        exec(code, namespace)  # noqa: S102 - the page is the project's own text
    out = capsys.readouterr().out
    assert "largest relative error on S" in out
