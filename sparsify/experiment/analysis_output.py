"""Files of the analyses: ``recall.txt``/``recall.png`` and ``stability.txt``/``stability.png``.

Written by :func:`~sparsify.experiment.finish` when the configuration lists
``analyses``, and by ``sparsify report RUN_DIR`` from a finished run's
``results.csv`` (functions of the rows alone, so the tables come out byte for
byte the same). The plots need matplotlib and are skipped without it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_write
from .analyses import _method_order, format_recall, recall_points
from .stability import STABILITY_MODES, format_stability, stability_points

__all__ = ["plot_recall", "plot_stability", "write_analyses"]


def write_analyses(rows, out_dir, analyses, title: str = "", plots: bool = True) -> tuple[str, list[Path]]:
    """Write the tables (and plots) of ``analyses`` (names from ``("recall", "stability")``).

    Returns the tables' text and the paths written.
    """
    out_dir = Path(out_dir)
    texts, written = [], []
    for name, fmt, plot in (("recall", format_recall, plot_recall), ("stability", format_stability,
                                                                      plot_stability)):
        if name not in analyses:
            continue
        text = fmt(rows) + "\n"
        path = out_dir / f"{name}.txt"
        atomic_write(path, lambda fh, t=text: fh.write(t.encode("utf-8")))
        texts.append(text)
        written.append(path)
        if plots:
            png = plot(rows, out_dir, title)
            if png is not None:
                written.append(png)
    return "\n".join(texts), written


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    plt.close(fig)
    return path


def plot_recall(rows, out_dir, title: str = "") -> Path | None:
    """``recall.png``: per method, each class's change of relative recall against its relative recall before
    pruning minus 1 (one point per class, seed and kept fraction; colour = kept fraction)."""
    plt = _pyplot()
    points = recall_points(rows)
    if plt is None or not points:
        return None
    mode = next(m for m in ("retrain", "oneshot", "iterative", "during") if any(p["mode"] == m for p in points))
    points = [p for p in points if p["mode"] == mode]
    methods = sorted({p["method"] for p in points}, key=_method_order)
    keeps = sorted({p["keep"] for p in points}, reverse=True)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 3.6), squeeze=False, sharey=True)
    for ax, method in zip(axes[0], methods):
        for i, keep in enumerate(keeps):
            sel = [p for p in points if p["method"] == method and p["keep"] == keep]
            if not sel:
                continue
            d = np.concatenate([p["before"] - 1 for p in sel])
            change = np.concatenate([p["after"] - p["before"] for p in sel])
            colour = cmap(i / max(1, len(keeps) - 1))
            ax.scatter(d, change, s=10, color=colour, alpha=0.7, label=f"keep {keep:.3g}")
            ok = np.isfinite(d) & np.isfinite(change)
            if ok.any() and float(d[ok] @ d[ok]) > 0:
                slope = float(d[ok] @ change[ok] / (d[ok] @ d[ok]))
                xs = np.array([d[ok].min(), d[ok].max()])
                ax.plot(xs, slope * xs, color=colour, lw=1)
        ax.axhline(0, color="k", lw=0.6)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("relative recall before - 1")
        ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("change of relative recall")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{title} {mode}: recall distortion (slope > 0 intensifies)".strip(), fontsize=10)
    return _save(fig, Path(out_dir) / "recall.png", plt)


def plot_stability(rows, out_dir, title: str = "") -> Path | None:
    """``stability.png``: instability against the generalization gap and against test accuracy, one row of
    panels per mode, one colour per method."""
    plt = _pyplot()
    points = stability_points(rows)
    if plt is None or not points:
        return None
    modes = [m for m in STABILITY_MODES if any(p["mode"] == m for p in points)]
    methods = sorted({p["method"] for p in points}, key=_method_order)
    fig, axes = plt.subplots(len(modes), 2, figsize=(9, 3.4 * len(modes)), squeeze=False)
    for row_axes, mode in zip(axes, modes):
        for j, (key, label) in enumerate((("gap", "generalization gap (train - test), %"),
                                          ("test_accuracy", "test accuracy, %"))):
            ax = row_axes[j]
            for k, method in enumerate(methods):
                sel = [p for p in points if p["mode"] == mode and p["method"] == method]
                if sel:
                    ax.scatter([100 * p["instability"] for p in sel], [100 * p[key] for p in sel], s=14,
                               color=f"C{k % 10}", label=method)
            ax.set_xlabel("instability, %")
            ax.set_ylabel(label)
            ax.set_title(f"{title} {mode}".strip(), fontsize=9)
            ax.grid(True, alpha=0.3)
        row_axes[1].legend(fontsize=7)
    return _save(fig, Path(out_dir) / "stability.png", plt)
