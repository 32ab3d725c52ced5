"""The paper's experiment: train, prune with SiPP and baselines, (re)train, compare.

One run is a grid of **cells** ``(mode, method, keep, seed)``. For every seed a
reference network is trained from a seeded initialisation (its accuracy is the
``dense`` row at keep 1), a batch S is drawn from the validation split, and every
method prunes the network to every kept fraction of the geometric grid:

* ``oneshot`` — prune once and evaluate;
* ``retrain`` — prune, evaluate (``accuracy_after_prune``), fine-tune with the
  mask fixed for ``retrain_epochs`` and evaluate again (``test_accuracy``);
* ``iterative`` — a prune–retrain cascade down the grid (largest keep first):
  each step prunes the previous step's retrained network.

``drop_after_prune`` is the accuracy of the network that was pruned (the dense
network, or the previous step of the cascade) minus the accuracy right after
pruning, before any retraining. With ``lottery = true`` a lottery-ticket panel
adds cells of mode ``lottery``: the mask of ``lottery_method`` and a random mask
with the same kept count in every layer, each applied to the original
initialisation and trained with the full schedule.

Outputs in the run's folder: ``results.csv`` (one row per finished cell, appended
as cells finish, so an interrupted run resumes where it stopped), ``results.json``
(configuration, rows with per-class recall and per-layer counts, summary),
``summary.txt``, ``config.json`` and the plots ``accuracy.png``, ``layers.png``
and ``lottery.png``. Trained reference networks are kept in ``networks/`` so a
resumed run does not retrain them.

Method names: ``sipp-det``, ``sipp-rand``, ``sipp-hybrid`` (SiPP with the
authors' default allocations), ``sipp-det-balanced`` (det with the balanced
allocation), ``magnitude-global``, ``magnitude-layer``, ``random``, ``snip``,
``wanda`` (:mod:`sparsify.baselines`), and ``dense``.
"""
from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import data as _data
from ._blas import single_threaded_blas
from . import train as _train
from .io import atomic_write, load, save

#: SiPP variants: experiment name -> (prune method, allocation or None for the authors' default).
SIPP_METHODS = {
    "sipp-det": ("det", None),
    "sipp-rand": ("rand", None),
    "sipp-hybrid": ("hybrid", None),
    "sipp-det-balanced": ("det", "balanced"),
}
BASELINE_METHODS = ("magnitude-global", "magnitude-layer", "random", "snip", "wanda")
METHODS = tuple(SIPP_METHODS) + BASELINE_METHODS
MODES = ("oneshot", "retrain", "iterative")
#: tolerances (fractions of accuracy, i.e. 0.5, 1 and 2 percentage points) of the commensurate prune ratio.
TOLERANCES = (0.005, 0.01, 0.02)

CSV_COLUMNS = (
    "method", "mode", "keep", "seed", "test_accuracy", "accuracy_after_prune", "drop_after_prune",
    "kept_weights", "total_weights", "keep_achieved", "prune_seconds", "retrain_seconds",
    "kept_per_layer", "total_per_layer", "sampled_sides", "det_sides", "dead_sides", "allocation",
    "s_size", "per_class_recall",
)
_INT_COLUMNS = ("seed", "kept_weights", "total_weights", "sampled_sides", "det_sides", "dead_sides", "s_size")
_FLOAT_COLUMNS = ("keep", "test_accuracy", "accuracy_after_prune", "drop_after_prune", "keep_achieved",
                  "prune_seconds", "retrain_seconds")
_LIST_COLUMNS = {"kept_per_layer": int, "total_per_layer": int, "per_class_recall": float}


# --- configuration ----------------------------------------------------------------------
@dataclass
class ExperimentConfig:
    """Everything that defines a run (a TOML file holds the same keys, flat).

    Data and model: ``data`` ("digits", "generated" or "mnist:DIR"),
    ``data_seed`` (the split), ``hidden`` widths and ``activation``.
    Training of the reference network: ``epochs, batch_size, lr, momentum,
    weight_decay, milestones, gamma`` (see :func:`sparsify.train.train`).
    Fine-tuning after pruning: ``retrain_epochs, retrain_lr, retrain_milestones``
    (batch size, momentum, weight decay and gamma as above).
    Pruning: ``methods``, the keep grid (``keeps`` explicitly, or
    ``keep_points`` values from ``keep_max`` down to ``keep_min``, geometric),
    ``seeds`` (a list, or an int n for 0..n-1), ``mode``, ``s_size`` (0 = the
    authors' ``ceil(3 ln(8 eta eta* / delta))``), ``delta`` and ``C``.
    Lottery panel: ``lottery``, ``lottery_method`` and ``lottery_keeps`` (empty =
    the whole grid).
    """

    data: str = "digits"
    data_seed: int = 0
    hidden: list = field(default_factory=lambda: [300, 100])
    activation: str = "relu"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list = field(default_factory=lambda: [15, 25])
    gamma: float = 0.1
    retrain_epochs: int = 10
    retrain_lr: float = 0.05
    retrain_milestones: list = field(default_factory=lambda: [7])
    methods: list = field(default_factory=lambda: list(METHODS))
    keeps: list = field(default_factory=list)
    keep_max: float = 0.5
    keep_min: float = 0.02
    keep_points: int = 8
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    mode: str = "retrain"
    s_size: int = 0
    delta: float = 1e-16
    C: float = 3.0
    lottery: bool = True
    lottery_method: str = "sipp-hybrid"
    lottery_keeps: list = field(default_factory=list)

    # -- construction and checks --
    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "ExperimentConfig":
        """Build a config from a flat dict (TOML file or flags), checking every key."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"{source}: unknown key(s) {unknown}; known keys are {sorted(known)} (all flat, no tables)."
            )
        cfg = cls()
        for key, value in values.items():
            setattr(cfg, key, value)
        cfg.check(source)
        return cfg

    def check(self, source: str = "config") -> None:
        def fail(key, rule, exc=ValueError):
            raise exc(f"{source}: {key} {rule}, got {getattr(self, key)!r}.")

        def int_list(key, minimum):
            value = getattr(self, key)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and key == "seeds":
                value = list(range(int(value)))
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in value):
                fail(key, f"must be a list of integers >= {minimum}", TypeError)
            setattr(self, key, [int(v) for v in value])

        def number(key, low, high=None, integer=False, low_open=False):
            value = getattr(self, key)
            kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
            if isinstance(value, bool) or not isinstance(value, kinds):
                fail(key, "must be an integer" if integer else "must be a number", TypeError)
            ok = (value > low if low_open else value >= low) and (high is None or value <= high)
            if not ok or not math.isfinite(value):
                fail(key, f"must be {'>' if low_open else '>='} {low}" + (f" and <= {high}" if high else ""))
            setattr(self, key, int(value) if integer else float(value))

        if not isinstance(self.data, str):
            fail("data", "must be 'digits', 'generated' or 'mnist:DIR'", TypeError)
        number("data_seed", 0, integer=True)
        int_list("hidden", 1)
        if not isinstance(self.activation, str) or self.activation not in _train.DERIVATIVES:
            fail("activation", f"must be one of {sorted(_train.DERIVATIVES)}")
        for key in ("epochs", "retrain_epochs"):
            number(key, 0, integer=True)
        number("batch_size", 1, integer=True)
        for key in ("lr", "retrain_lr", "gamma", "C"):
            number(key, 0, low_open=True)
        number("momentum", 0, 0.999)
        number("weight_decay", 0)
        int_list("milestones", 0)
        int_list("retrain_milestones", 0)
        if isinstance(self.methods, str):
            self.methods = [m.strip() for m in self.methods.split(",") if m.strip()]
        if not isinstance(self.methods, (list, tuple)) or not self.methods:
            fail("methods", f"must be a non-empty list drawn from {list(METHODS)}", TypeError)
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"{source}: methods contains unknown name(s) {bad}; choose from {list(METHODS)}.")
        self.methods = list(dict.fromkeys(self.methods))
        for key in ("keeps", "lottery_keeps"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in value):
                fail(key, "must be a list of fractions in (0, 1)", TypeError)
            setattr(self, key, [float(v) for v in value])
        number("keep_max", 0, 1, low_open=True)
        number("keep_min", 0, 1, low_open=True)
        number("keep_points", 1, integer=True)
        if self.keep_min > self.keep_max:
            raise ValueError(f"{source}: keep_min ({self.keep_min}) must not exceed keep_max ({self.keep_max}).")
        if not self.keeps and self.keep_max >= 1.0:
            fail("keep_max", "must be < 1 (keep 1 is the dense network, always included)")
        int_list("seeds", 0)
        if not self.seeds:
            fail("seeds", "must name at least one seed")
        self.seeds = list(dict.fromkeys(self.seeds))
        if self.mode not in MODES:
            fail("mode", f"must be one of {list(MODES)}")
        number("s_size", 0, integer=True)
        number("delta", 0, 1, low_open=True)
        if not isinstance(self.lottery, bool):
            fail("lottery", "must be true or false", TypeError)
        if self.lottery_method not in METHODS:
            fail("lottery_method", f"must be one of {list(METHODS)}")

    # -- derived values --
    def keep_grid(self) -> list[float]:
        """The kept fractions, largest first, rounded to 4 significant digits."""
        if self.keeps:
            grid = self.keeps
        elif self.keep_points == 1:
            grid = [self.keep_max]
        else:
            grid = np.geomspace(self.keep_max, self.keep_min, self.keep_points).tolist()
        return sorted({float(f"{k:.4g}") for k in grid}, reverse=True)

    def lottery_grid(self) -> list[float]:
        if not self.lottery:
            return []
        return sorted({float(f"{k:.4g}") for k in (self.lottery_keeps or self.keep_grid())}, reverse=True)

    def widths(self, n_in: int, n_out: int) -> list[int]:
        return [n_in, *self.hidden, n_out]

    def schedule(self) -> dict:
        return dict(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                    weight_decay=self.weight_decay, milestones=self.milestones, gamma=self.gamma)

    def retrain_schedule(self) -> dict:
        return dict(epochs=self.retrain_epochs, batch_size=self.batch_size, lr=self.retrain_lr,
                    momentum=self.momentum, weight_decay=self.weight_decay,
                    milestones=self.retrain_milestones, gamma=self.gamma)

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path) -> dict:
    """Read a flat TOML config file into a dict (checked by :meth:`ExperimentConfig.from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: file {str(path)!r} does not exist; pass a TOML file such as experiment.toml.")
    try:
        with open(path, "rb") as fh:
            values = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config: {str(path)!r} is not valid TOML ({exc}).") from None
    tables = sorted(k for k, v in values.items() if isinstance(v, dict))
    if tables:
        raise ValueError(
            f"config: {str(path)!r} has table(s) {tables}; write every key at the top level "
            "(e.g. epochs = 40, not [train] epochs = 40)."
        )
    return values


# --- results.csv: append as cells finish, read robustly ----------------------------------
def _format_value(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return ";".join(_format_value(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return "nan" if not math.isfinite(value) else repr(float(value))
    return str(value)


def _row_line(row: dict) -> str:
    buf = _io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_format_value(row[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def _parse_row(raw: dict) -> dict:
    row = dict(raw)
    for c in _INT_COLUMNS:
        row[c] = int(row[c])
    for c in _FLOAT_COLUMNS:
        row[c] = float(row[c])
    for c, kind in _LIST_COLUMNS.items():
        row[c] = [kind(v) for v in row[c].split(";")] if row[c] else []
    return row


def read_results_csv(path) -> list[dict]:
    """Rows of a ``results.csv``, skipping a half-written last line and malformed rows.

    Every complete line (ending in a newline) with the right number of fields
    that parses is returned, with numbers and ``;``-joined lists converted.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # an interrupted append
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header) != CSV_COLUMNS:
        raise ValueError(
            f"out: {str(path)!r} has columns {header}, not those this version writes; "
            "use a new output folder."
        )
    rows = []
    for fields_ in reader:
        if len(fields_) != len(CSV_COLUMNS):
            continue
        try:
            rows.append(_parse_row(dict(zip(CSV_COLUMNS, fields_))))
        except ValueError:
            continue
    return rows


def _rewrite_csv(path: Path, rows: list[dict]) -> None:
    text = ",".join(CSV_COLUMNS) + "\n" + "".join(_row_line(r) for r in rows)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def cell_key(mode: str, method: str, keep: float, seed: int) -> tuple:
    return (mode, method, f"{float(keep):.6g}", int(seed))


# --- summary -------------------------------------------------------------------------------
def _groups(rows):
    out: dict = {}
    for r in rows:
        out.setdefault((r["mode"], r["method"], float(r["keep"])), []).append(float(r["test_accuracy"]))
    return out


def accuracy_table(rows) -> dict:
    """``{(mode, method, keep): (mean, std, n)}`` of test accuracy over seeds (population std)."""
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in _groups(rows).items()}


def dense_accuracy(rows) -> float:
    """Mean test accuracy of the unpruned network (rows of method ``dense``), NaN if none."""
    acc = {}
    for r in rows:
        if r["method"] == "dense":
            acc[int(r["seed"])] = float(r["test_accuracy"])
    return float(np.mean(list(acc.values()))) if acc else float("nan")


def commensurate_prune_ratios(rows, tolerances=TOLERANCES) -> dict:
    """Largest prune ratio ``1 - keep`` whose mean accuracy is within a tolerance of dense.

    For every ``(mode, method)`` (dense excluded) and every tolerance t (a
    fraction: 0.005 = 0.5 percentage points) the result is the largest
    ``1 - keep`` over the grid with ``mean acc(keep) >= mean acc(dense) - t``,
    or None when no kept fraction qualifies. The dense mean is taken over the
    ``dense`` rows (one per seed).
    """
    ref = dense_accuracy(rows)
    table = accuracy_table(rows)
    out: dict = {}
    for (mode, method, keep), (mean, _, _) in table.items():
        if method == "dense":
            continue
        entry = out.setdefault((mode, method), {t: None for t in tolerances})
        for t in tolerances:
            if mean >= ref - t - 1e-12:
                ratio = 1.0 - keep
                if entry[t] is None or ratio > entry[t]:
                    entry[t] = ratio
    return out


def _pct(x) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def format_summary(rows, mode: str | None = None, tolerances=TOLERANCES) -> str:
    """Plain-text tables: accuracy (mean ± std, %) per method and keep; commensurate prune ratios."""
    table = accuracy_table(rows)
    modes = [mode] if mode else sorted({r["mode"] for r in rows}, key=lambda m: (m == "lottery", m))
    ref = dense_accuracy(rows)
    ratios = commensurate_prune_ratios(rows, tolerances)
    blocks = []
    for md in modes:
        methods = [m for m in dict.fromkeys(r["method"] for r in rows if r["mode"] == md) if m != "dense"]
        keeps = sorted({k for (m_, _, k) in table if m_ == md and k < 1.0}, reverse=True)
        if not methods:
            continue
        head = ["method"] + [f"keep {k:.3g}" for k in keeps] + [f"PR@{100 * t:g}pp" for t in tolerances]
        body = []
        for method in methods:
            cells = []
            for k in keeps:
                v = table.get((md, method, k))
                cells.append("-" if v is None else f"{100 * v[0]:.1f}±{100 * v[1]:.1f}")
            pr = ratios.get((md, method), {})
            cells += [_pct(pr.get(t)) for t in tolerances]
            body.append([method] + cells)
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = [f"mode {md}: test accuracy % (mean±std over seeds); dense {100 * ref:.2f}%; "
                 "PR@t = largest prune ratio % with mean accuracy within t of dense"]
        lines.append("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
        lines.append("  ".join("-" * w for w in widths))
        for b in body:
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths))))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_layers(rows, mode: str, seed: int | None = None, keeps=None) -> str:
    """Kept weights per layer (and sampled sides) of every method at every keep (or ``keeps``), one seed."""
    sel = [r for r in rows if r["mode"] == mode and r["method"] != "dense"
           and (keeps is None or any(abs(r["keep"] - k) < 1e-9 for k in keeps))]
    if not sel:
        return ""
    seed = min(int(r["seed"]) for r in sel) if seed is None else seed
    sel = sorted((r for r in sel if int(r["seed"]) == seed), key=lambda r: (-r["keep"], METHODS.index(r["method"])
                                                                           if r["method"] in METHODS else 99))
    totals = sel[0]["total_per_layer"]
    head = ["keep", "method"] + [f"layer {i} (of {t})" for i, t in enumerate(totals)] + ["sampled sides"]
    body = [[f"{r['keep']:.3g}", r["method"]] + [str(k) for k in r["kept_per_layer"]] + [str(r["sampled_sides"])]
            for r in sel]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = [f"kept weights per layer right after pruning (mode {mode}, seed {seed})",
             "  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# --- plots -----------------------------------------------------------------------------------
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

    def band(ax, mode, method, key="test_accuracy", label=None, **kw):
        by_keep: dict = {}
        for r in rows:
            if r["mode"] == mode and r["method"] == method:
                by_keep.setdefault(r["keep"], []).append(100 * r[key])
        if not by_keep:
            return
        ks = sorted(by_keep)
        mean = np.array([np.mean(by_keep[k]) for k in ks])
        std = np.array([np.std(by_keep[k]) for k in ks])
        (line,) = ax.plot(ks, mean, marker="o", ms=3, label=label or method, **kw)
        ax.fill_between(ks, mean - std, mean + std, color=line.get_color(), alpha=0.15)

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    grid = sorted({float(r["keep"]) for r in rows if r["method"] != "dense"})

    def keep_axis(ax):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(grid))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)

    def finish(ax, ylabel="test accuracy (%)"):
        if math.isfinite(ref):
            ax.axhline(100 * ref, color="k", ls="--", lw=1, label="dense")
            ax.axhspan(100 * ref - 0.5, 100 * ref, color="k", alpha=0.06)
        keep_axis(ax)
        ax.set_xlabel("kept fraction of weights (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)

    for mode in main_modes:
        methods = [m for m in METHODS if any(r["mode"] == mode and r["method"] == m for r in rows)]
        panels = [("test_accuracy", "after retraining" if mode != "oneshot" else "one-shot")]
        if mode != "oneshot":
            panels.insert(0, ("accuracy_after_prune", "right after pruning"))
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
        for ax, (key, sub) in zip(axes[0], panels):
            for method in methods:
                band(ax, mode, method, key)
            finish(ax)
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
            for method in [m for m in METHODS if any(r["method"] == m for r in sel)]:
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
        finish(ax)
        ax.set_title(f"{title} lottery ticket: masks trained from the original initialisation".strip())
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / "lottery.png"
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
        plt.close(fig)
        written.append(path)
    return written


# --- running ----------------------------------------------------------------------------------
def _method_id(method: str) -> int:
    return (METHODS + ("dense",)).index(method)


def _seq(*parts) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative ints (order-independent of the run)."""
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


def prune_with(method: str, network, X_S, y_S, keep: float, rng, *, delta: float, C: float):
    """Prune with an experiment method name; returns the :class:`~sparsify.prune.PruneResult`."""
    from .baselines import prune_baseline
    from .prune import prune

    budget = max(1, int(round(keep * network.n_weights)))
    budget = min(budget, max(1, int(sum(np.count_nonzero(w) for w in network.weights))))
    if method in SIPP_METHODS:
        sipp_method, allocation = SIPP_METHODS[method]
        return prune(network, X_S, budget=budget, method=sipp_method, allocation=allocation, rng=rng,
                     delta=delta, C=C)
    return prune_baseline(network, X_S, budget=budget, method=method, y_S=y_S, rng=rng)


def _warm_up(methods, log) -> None:
    """Compile the Numba kernels before anything is timed."""
    from .network import random_mlp

    net = random_mlp([6, 5, 3], rng=0)
    X = np.random.default_rng(0).standard_normal((8, 6))
    y = np.arange(8) % 3
    t0 = time.perf_counter()
    for method in methods:
        prune_with(method, net, X, y, 0.5, 0, delta=1e-16, C=3.0)
    dt = time.perf_counter() - t0
    if dt > 1.0:
        print(f"compiled pruning kernels in {dt:.1f} s (not counted in prune_seconds)", file=log, flush=True)


class _Run:
    """State of one experiment run in its output folder."""

    def __init__(self, cfg: ExperimentConfig, out: Path, log, dataset):
        self.cfg, self.out, self.log, self.ds = cfg, out, log, dataset
        self.csv = out / "results.csv"
        self.rows = read_results_csv(self.csv)
        self.done = {cell_key(r["mode"], r["method"], r["keep"], r["seed"]) for r in self.rows}
        _rewrite_csv(self.csv, self.rows)  # drops a half-written line so appends stay well-formed
        self.grid = cfg.keep_grid()
        self.lottery_grid = cfg.lottery_grid()
        per_seed = len(cfg.methods) * len(self.grid) + 1 + 2 * len(self.lottery_grid)
        self.total = per_seed * len(cfg.seeds)
        self.count = 0
        self.resumed = len(self.done)

    # -- bookkeeping --
    def is_done(self, mode, method, keep, seed) -> bool:
        return cell_key(mode, method, keep, seed) in self.done

    def record(self, row: dict) -> None:
        row = {c: row.get(c, "") for c in CSV_COLUMNS}
        line = _row_line(row)
        with open(self.csv, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.append(_parse_row(dict(zip(CSV_COLUMNS, next(csv.reader([line]))))))
        self.done.add(cell_key(row["mode"], row["method"], row["keep"], row["seed"]))
        self.count += 1
        drop = row["drop_after_prune"]
        drop_txt = "" if not isinstance(drop, float) or not math.isfinite(drop) else f", drop {100 * drop:+.1f}pp"
        print(f"[{self.count + self.resumed:4d}/{self.total}] {row['mode']:9s} {row['method']:17s} "
              f"keep {row['keep']:<6.3g} seed {row['seed']}: acc {100 * row['test_accuracy']:.2f}%{drop_txt}, "
              f"kept {row['kept_weights']}/{row['total_weights']}, prune {row['prune_seconds']:.3f}s",
              file=self.log, flush=True)

    def evaluate(self, net):
        acc = _train.accuracy(net, self.ds.X_test, self.ds.y_test)
        recall = _train.per_class_recall(net, self.ds.X_test, self.ds.y_test, self.ds.n_classes)
        return acc, recall

    @staticmethod
    def counts(net):
        kept = [int(np.count_nonzero(w)) for w in net.weights]
        total = [int(w.size) for w in net.weights]
        return kept, total

    def row(self, *, method, mode, keep, seed, acc, recall, acc_pruned, acc_parent, net, prune_s=0.0,
            retrain_s=0.0, report=None, s_size=0):
        kept, total = self.counts(net)
        layers = report.layers if report is not None else []
        return dict(
            method=method, mode=mode, keep=float(keep), seed=int(seed), test_accuracy=float(acc),
            accuracy_after_prune=float(acc_pruned), drop_after_prune=float(acc_parent - acc_pruned),
            kept_weights=sum(kept), total_weights=sum(total), keep_achieved=sum(kept) / sum(total),
            prune_seconds=float(prune_s), retrain_seconds=float(retrain_s), kept_per_layer=kept,
            total_per_layer=total, sampled_sides=int(sum(l.get("sampled_sides", 0) for l in layers)),
            det_sides=int(sum(l.get("det_sides", 0) for l in layers)),
            dead_sides=int(sum(l.get("dead_sides", 0) for l in layers)),
            allocation=report.allocation if report is not None else "", s_size=int(s_size),
            per_class_recall=[float(v) for v in recall],
        )

    # -- the reference network --
    def reference(self, seed: int):
        cfg = self.cfg
        path = self.out / "networks" / f"dense-seed{seed}.npz"
        if path.exists():
            return load(path)
        t0 = time.perf_counter()
        init = _train.init_mlp(cfg.widths(self.ds.n_features, self.ds.n_classes), cfg.activation, rng=_seq(seed, 0))
        net = _train.train(init, self.ds.X_train, self.ds.y_train, rng=_seq(seed, 1), **cfg.schedule())
        path.parent.mkdir(exist_ok=True)
        save(net, path)
        print(f"seed {seed}: trained {net!r} in {time.perf_counter() - t0:.1f} s", file=self.log, flush=True)
        return net

    def initialisation(self, seed: int):
        cfg = self.cfg
        return _train.init_mlp(cfg.widths(self.ds.n_features, self.ds.n_classes), cfg.activation, rng=_seq(seed, 0))

    def s_size(self, net) -> int:
        return self.cfg.s_size or _data.authors_s_size(net, self.cfg.delta)

    # -- cells --
    def prune_cell(self, mode, method, keep, seed, parent, acc_parent, X_S, y_S, k_index):
        cfg = self.cfg
        t0 = time.perf_counter()
        res = prune_with(method, parent, X_S, y_S, keep, _seq(seed, 2, _method_id(method), k_index),
                         delta=cfg.delta, C=cfg.C)
        prune_s = time.perf_counter() - t0
        pruned = res.network
        acc_pruned, recall = self.evaluate(pruned)
        acc, net, retrain_s = acc_pruned, pruned, 0.0
        if mode in ("retrain", "iterative") and cfg.retrain_epochs > 0:
            t1 = time.perf_counter()
            net = _train.train(pruned, self.ds.X_train, self.ds.y_train, masks=[w != 0 for w in pruned.weights],
                               rng=_seq(seed, 3, _method_id(method), k_index), **cfg.retrain_schedule())
            retrain_s = time.perf_counter() - t1
            acc, recall = self.evaluate(net)
        row = self.row(method=method, mode=mode, keep=keep, seed=seed, acc=acc, recall=recall,
                       acc_pruned=acc_pruned, acc_parent=acc_parent, net=pruned, prune_s=prune_s,
                       retrain_s=retrain_s, report=res.report, s_size=len(X_S))
        return row, net, acc

    def run_seed(self, seed: int) -> None:
        cfg, ds = self.cfg, self.ds
        dense = self.reference(seed)
        dense_acc, dense_recall = self.evaluate(dense)
        X_S, y_S = _data.draw_S(ds, self.s_size(dense), rng=_seq(seed, 4))
        if not self.is_done(cfg.mode, "dense", 1.0, seed):
            self.record(self.row(method="dense", mode=cfg.mode, keep=1.0, seed=seed, acc=dense_acc,
                                 recall=dense_recall, acc_pruned=dense_acc, acc_parent=dense_acc, net=dense,
                                 s_size=len(X_S)))
        for method in cfg.methods:
            if cfg.mode == "iterative":
                self.run_chain(method, seed, dense, dense_acc, X_S, y_S)
                continue
            for k_index, keep in enumerate(self.grid):
                if self.is_done(cfg.mode, method, keep, seed):
                    continue
                row, _, _ = self.prune_cell(cfg.mode, method, keep, seed, dense, dense_acc, X_S, y_S, k_index)
                self.record(row)
        for k_index, keep in enumerate(self.lottery_grid):
            self.run_lottery(seed, keep, k_index, dense, dense_acc, X_S, y_S)

    def run_chain(self, method, seed, dense, dense_acc, X_S, y_S) -> None:
        """The prune–retrain cascade; resumes from the checkpoint of the last finished step."""
        ckpt_dir = self.out / "networks"
        ckpt_dir.mkdir(exist_ok=True)
        start, parent, acc_parent = 0, dense, dense_acc
        for k_index in range(len(self.grid) - 1, -1, -1):
            path = ckpt_dir / f"chain-{method}-seed{seed}-step{k_index}.npz"
            if path.exists() and all(self.is_done("iterative", method, k, seed) for k in self.grid[:k_index + 1]):
                start, parent = k_index + 1, load(path)
                acc_parent = self.evaluate(parent)[0]
                break
        for k_index in range(start, len(self.grid)):
            keep = self.grid[k_index]
            row, net, acc = self.prune_cell("iterative", method, keep, seed, parent, acc_parent, X_S, y_S, k_index)
            path = ckpt_dir / f"chain-{method}-seed{seed}-step{k_index}.npz"
            save(net, path)
            if not self.is_done("iterative", method, keep, seed):
                self.record(row)
            old = ckpt_dir / f"chain-{method}-seed{seed}-step{k_index - 1}.npz"
            if old.exists():
                old.unlink()
            parent, acc_parent = net, acc

    def run_lottery(self, seed, keep, k_index, dense, dense_acc, X_S, y_S) -> None:
        cfg = self.cfg
        method = cfg.lottery_method
        if self.is_done("lottery", method, keep, seed) and self.is_done("lottery", "random", keep, seed):
            return
        init = self.initialisation(seed)
        t0 = time.perf_counter()
        res = prune_with(method, dense, X_S, y_S, keep, _seq(seed, 2, _method_id(method), 1000 + k_index),
                         delta=cfg.delta, C=cfg.C)
        prune_s = time.perf_counter() - t0
        sipp_masks = [w != 0 for w in res.network.weights]
        gen = _seq(seed, 5, k_index)
        rand_masks = []
        for m in sipp_masks:  # same kept count per layer, positions uniformly at random
            flat = np.zeros(m.size, bool)
            flat[gen.choice(m.size, size=int(m.sum()), replace=False)] = True
            rand_masks.append(flat.reshape(m.shape))
        for name, masks, seconds in ((method, sipp_masks, prune_s), ("random", rand_masks, 0.0)):
            if self.is_done("lottery", name, keep, seed):
                continue
            ticket = init.with_weights([np.where(m, w, 0) for m, w in zip(masks, init.weights)])
            acc_ticket, _ = self.evaluate(ticket)
            t1 = time.perf_counter()
            net = _train.train(ticket, self.ds.X_train, self.ds.y_train, masks=masks, rng=_seq(seed, 1),
                               **cfg.schedule())
            acc, recall = self.evaluate(net)
            row = self.row(method=name, mode="lottery", keep=keep, seed=seed, acc=acc, recall=recall,
                           acc_pruned=acc_ticket, acc_parent=acc_ticket, net=ticket, prune_s=seconds,
                           retrain_s=time.perf_counter() - t1, report=res.report if name == method else None,
                           s_size=len(X_S))
            row["drop_after_prune"] = float("nan")
            self.record(row)


def reprune(config: ExperimentConfig, out_dir, method: str, keep: float, seed: int, dataset=None):
    """Repeat the pruning of one finished cell: same network, same S, same random numbers.

    ``keep`` must be on the run's grid. Returns ``(PruneResult, X_S)``; used by
    the demo to print the per-layer report of a run.
    """
    grid = config.keep_grid()
    matches = [i for i, k in enumerate(grid) if abs(k - float(keep)) < 1e-9]
    if not matches:
        raise ValueError(f"keep: {keep} is not on the run's grid {grid}; pick one of those.")
    path = Path(out_dir) / "networks" / f"dense-seed{seed}.npz"
    if not path.exists():
        raise ValueError(f"seed: {str(path)!r} does not exist; run the experiment for seed {seed} first.")
    dense = load(path)
    ds = dataset if dataset is not None else _data.load_dataset(config.data, rng=config.data_seed)
    size = config.s_size or _data.authors_s_size(dense, config.delta)
    X_S, y_S = _data.draw_S(ds, size, rng=_seq(seed, 4))
    res = prune_with(method, dense, X_S, y_S, grid[matches[0]], _seq(seed, 2, _method_id(method), matches[0]),
                     delta=config.delta, C=config.C)
    return res, X_S


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: the rows (all finished cells) and the summary text."""

    out_dir: Path
    rows: list
    summary: str
    plots: list


def _check_out(out: Path, cfg: ExperimentConfig) -> None:
    cfg_path = out / "config.json"
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} exists and is not a folder; choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    mine = json.loads(json.dumps(cfg.to_dict()))
    if cfg_path.exists():
        try:
            theirs = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"out: {str(cfg_path)!r} is unreadable ({exc}); choose a new --out.") from None
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise ValueError(
                f"out: {str(out)!r} holds a run with a different configuration (differs in {differ}); "
                "resume it with the same settings or choose a new --out."
            )
    elif (out / "results.csv").exists():
        raise ValueError(f"out: {str(out)!r} has results.csv but no config.json; choose a new --out.")
    else:
        text = json.dumps(mine, indent=2) + "\n"
        atomic_write(cfg_path, lambda fh: fh.write(text.encode("utf-8")))


def run_experiment(config: ExperimentConfig, out_dir, *, log=None, plots: bool = True) -> ExperimentResult:
    """Run (or resume) the experiment described by ``config`` in ``out_dir``.

    Finished cells found in ``out_dir/results.csv`` are not redone; the folder's
    ``config.json`` must match ``config``. Progress lines go to ``log``
    (default: stderr). Returns the rows of all finished cells and the summary.
    BLAS runs single-threaded meanwhile (:func:`sparsify._blas.single_threaded_blas`): the
    experiment multiplies small matrices (a minibatch of 64 by a few hundred units), where a
    multithreaded BLAS only adds synchronisation and its spinning threads slow training down.
    """
    with single_threaded_blas():
        return _run_experiment(config, out_dir, log=log, plots=plots)


def _run_experiment(config, out_dir, *, log, plots) -> ExperimentResult:
    log = sys.stderr if log is None else log
    if not isinstance(config, ExperimentConfig):
        raise TypeError(f"config: expected an ExperimentConfig, got {type(config).__name__}.")
    config.check()
    out = Path(out_dir)
    dataset = _data.load_dataset(config.data, rng=config.data_seed)
    _check_out(out, config)
    run = _Run(config, out, log, dataset)
    print(f"data {dataset.describe()}; mode {config.mode}; {len(config.methods)} methods x "
          f"{len(run.grid)} keeps x {len(config.seeds)} seeds" + (f"; resuming with {run.resumed} cells done"
                                                                    if run.resumed else ""),
          file=log, flush=True)
    needed = set(config.methods) | ({config.lottery_method} if config.lottery else set())
    _warm_up([m for m in METHODS if m in needed], log)
    for seed in config.seeds:
        run.run_seed(seed)
    return finish(run.rows, config, out, dataset.describe(), plots=plots)


def _json_clean(obj):
    """NaN and inf become null (JSON has no NaN); tuples become lists."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def finish(rows, config: ExperimentConfig, out: Path, data_description: str = "",
           plots: bool = True) -> ExperimentResult:
    """Write ``summary.txt``, ``results.json`` and the plots from the finished rows."""
    summary = format_summary(rows)
    layers = format_layers(rows, config.mode)
    text = summary + ("\n\n" + layers if layers else "") + "\n"
    atomic_write(out / "summary.txt", lambda fh: fh.write(text.encode("utf-8")))
    ratios = commensurate_prune_ratios(rows)
    doc = {
        "config": config.to_dict(),
        "data": data_description,
        "dense_accuracy": dense_accuracy(rows),
        "commensurate_prune_ratio": [
            {"mode": mode, "method": method, **{f"within_{100 * t:g}pp": v for t, v in r.items()}}
            for (mode, method), r in sorted(ratios.items())
        ],
        "accuracy": [
            {"mode": mode, "method": method, "keep": keep, "mean": mean, "std": std, "n": n}
            for (mode, method, keep), (mean, std, n) in sorted(accuracy_table(rows).items())
        ],
        "rows": rows,
    }
    doc = _json_clean(doc)
    payload = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    atomic_write(out / "results.json", lambda fh: fh.write(payload.encode("utf-8")))
    written = plot_results(rows, out, title=data_description.split(":")[0]) if plots else []
    return ExperimentResult(out, rows, text, written)
