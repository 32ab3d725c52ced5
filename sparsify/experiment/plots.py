"""The run's plots: ``accuracy.png``, ``layers.png`` and ``lottery.png`` (matplotlib, optional)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io import atomic_write
from .config import MODES
from .refit import all_methods, is_refit, split_method
from .summary import dense_accuracy

__all__ = ["plot_results"]


def plot_results(rows, out_dir, title: str = "") -> list[Path]:
    """Write ``accuracy.png``, ``layers.png`` and (with lottery rows) ``lottery.png``.

    Returns the paths written; an empty list when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir = Path(out_dir)
    written = []
    ref = dense_accuracy(rows)
    main_modes = [m for m in MODES if any(r["mode"] == m for r in rows)]

    def band(ax, mode, method, key="test_accuracy", label=None):
        by_keep: dict = {}
        for r in rows:
            if r["mode"] == mode and r["method"] == method:
                by_keep.setdefault(r["keep"], []).append(100 * r[key])
        if not by_keep:
            return
        ks = sorted(by_keep)
        mean = np.array([np.mean(by_keep[k]) for k in ks])
        std = np.array([np.std(by_keep[k]) for k in ks])
        # a refit method: dashed, in the colour of its base method's line when that is on the axes
        colours = {ln.get_label(): ln.get_color() for ln in ax.get_lines()}
        style = dict(ls="--", color=colours.get(split_method(method)[0])) if is_refit(method) else {}
        (line,) = ax.plot(ks, mean, marker="o", ms=3, label=label or method, **style)
        ax.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.15)

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    grid = sorted({float(r["keep"]) for r in rows if r["method"] != "dense"})

    def keep_axis(ax):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(grid))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)

    def accuracy_axes(ax):
        """Dense line and band, log keep axis, labels and grid of an accuracy panel."""
        if math.isfinite(ref):
            ax.axhline(100 * ref, color="k", ls="--", lw=1, label="dense")
            ax.axhspan(100 * ref - 0.5, 100 * ref, color="k", alpha=0.06)
        keep_axis(ax)
        ax.set_xlabel("kept fraction of weights (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)

    for mode in main_modes:
        methods = [m for m in all_methods() if any(r["mode"] == mode and r["method"] == m for r in rows)]
        panels = [("test_accuracy", "after retraining" if mode != "oneshot" else "one-shot")]
        if mode != "oneshot":
            panels.insert(0, ("accuracy_after_prune", "right after pruning"))
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
        for ax, (key, sub) in zip(axes[0], panels):
            for method in methods:
                band(ax, mode, method, key)
            accuracy_axes(ax)
            ax.set_title(f"{title} {mode}: {sub}".strip())
        axes[0][-1].legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / "accuracy.png" if mode == main_modes[0] else out_dir / f"accuracy-{mode}.png"
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
        plt.close(fig)
        written.append(path)

    # kept fraction of every layer against the kept fraction overall
    mode = main_modes[0] if main_modes else None
    sel = [r for r in rows if r["mode"] == mode and r["method"] != "dense"]
    if sel:
        n_layers = len(sel[0]["total_per_layer"])
        fig, axes = plt.subplots(1, n_layers, figsize=(4.2 * n_layers, 3.8), squeeze=False)
        for layer, ax in enumerate(axes[0]):
            for method in [m for m in all_methods() if any(r["method"] == m for r in sel)]:
                by_keep: dict = {}
                for r in sel:
                    if r["method"] == method:
                        by_keep.setdefault(r["keep"], []).append(r["kept_per_layer"][layer] / r["total_per_layer"][layer])
                ks = sorted(by_keep)
                ax.plot(ks, [np.mean(by_keep[k]) for k in ks], marker="o", ms=3, label=method)
            ax.plot(ks, ks, color="k", lw=0.8, ls=":", label="uniform")
            keep_axis(ax)
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylim(0, 1.2)
            ax.set_title(f"layer {layer} ({sel[0]['total_per_layer'][layer]} weights)")
            ax.set_xlabel("kept fraction overall")
            ax.set_ylabel("kept fraction of the layer")
            ax.grid(True, which="both", alpha=0.3)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "layers.png"
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
        plt.close(fig)
        written.append(path)

    if any(r["mode"] == "lottery" for r in rows):
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for method in dict.fromkeys(r["method"] for r in rows if r["mode"] == "lottery"):
            label = f"{method} mask" if method != "random" else "random mask (same per-layer counts)"
            band(ax, "lottery", method, label=label)
        accuracy_axes(ax)
        ax.set_title(f"{title} lottery ticket: masks trained from the original initialisation".strip())
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / "lottery.png"
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
        plt.close(fig)
        written.append(path)
    return written
