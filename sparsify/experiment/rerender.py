"""Re-rendering a finished run: its tables and plots from ``config.json`` and ``results.csv`` alone."""
from __future__ import annotations

import json
from pathlib import Path

from .analysis_output import write_analyses
from .config import ExperimentConfig
from .results import read_results_csv
from .run import ExperimentResult, finish

__all__ = ["render_report"]


def render_report(run_dir, *, analyses=None, plots: bool = True) -> ExperimentResult:
    """Write ``summary.txt``, ``results.json``, the plots and the analyses of the run in ``run_dir`` again.

    Nothing is trained or pruned: the rows of ``results.csv`` are summarised as
    the run summarised them, so the tables are byte for byte the run's own.
    ``analyses`` (a list or a comma-separated string from ``recall,stability``)
    adds analyses to those of the run's configuration; ``results.json`` keeps
    the run's configuration.
    """
    out = Path(run_dir)
    if not out.is_dir():
        raise ValueError(f"run_dir: {str(out)!r} is not a folder; pass the --out folder of an experiment run.")
    cfg_path, csv_path = out / "config.json", out / "results.csv"
    if not cfg_path.is_file() or not csv_path.is_file():
        raise ValueError(f"run_dir: {str(out)!r} lacks config.json or results.csv, so it is not an experiment "
                         "run's folder; pass the --out folder of 'sparsify experiment'.")
    try:
        values = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"run_dir: {str(cfg_path)!r} is unreadable ({exc}).") from None
    if not isinstance(values, dict):
        raise ValueError(f"run_dir: {str(cfg_path)!r} does not hold a JSON object of settings.")
    config = ExperimentConfig.from_dict(values, source=str(cfg_path))
    extra = []
    if analyses:
        wanted = ExperimentConfig.from_dict(dict(values, analyses=analyses), source=str(cfg_path),
                                            names={"analyses": "--analyses"}).analyses
        extra = [a for a in wanted if a not in config.analyses]
    rows = read_results_csv(csv_path)
    if not rows:
        raise ValueError(f"run_dir: {str(csv_path)!r} holds no finished cell; nothing to report.")
    description = ""
    try:
        description = json.loads((out / "results.json").read_text(encoding="utf-8")).get("data", "")
    except (OSError, ValueError, AttributeError):
        pass  # results.json is rewritten below; the data's description only titles the plots
    result = finish(rows, config, out, description if isinstance(description, str) else "", plots=plots)
    if extra:
        text, files = write_analyses(rows, out, extra, title=description.split(":")[0], plots=plots)
        result = ExperimentResult(out, rows, result.summary + "\n" + text, result.plots + files)
    return result
