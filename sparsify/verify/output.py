"""Output of ``sparsify verify``: the text table, the JSON encoding and the sweep plot."""
from __future__ import annotations

import io
import math

from .stats import verdict_words

__all__ = ["format_table", "json_ready", "plot_sweep"]


def json_ready(obj):
    """A copy of ``obj`` (nested dicts, lists, tuples) with every non-finite float written as a string.

    ``inf``, ``-inf`` and ``nan`` become ``"inf"``, ``"-inf"`` and ``"nan"``
    (``float()`` reads them back), so a :func:`~sparsify.verify.verify` result
    can always be written as strict JSON; finite values are left as they are.
    """
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _fmt(x, spec=".3g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return format(x, spec)


def _shape(row: dict) -> str:
    """``n_out x n_in`` of a dense layer; ``c_out x c_in x kh x kw`` and its patches P of a convolution."""
    return row["shape"] + (f"/P{row['patches']}" if row["shape"].count("x") == 3 else "")


def format_table(result: dict) -> str:
    """The human-readable summary of a :func:`~sparsify.verify.verify` result.

    One row per layer and batch; the verdict comes last, in words
    (:func:`~sparsify.verify.stats.verdict_words`: a ``"holds"`` with failures
    says why it is vacuous).
    """
    r = result
    eps_text = "the bound each side claims" if r["eps"] is None else f"{r['eps']:g} for every side"
    lines = [
        f"verify: method={r['method']} allocation={r['allocation']} kept {r['kept']}/{r['total']} weights, "
        f"{r['seeds']} seeds ({r['first_seed']}..{r['first_seed'] + r['seeds'] - 1}), delta={r['delta']:g}, "
        f"C={r['C']:g}, |S|={r['n_S']}, |T|={r['n_T']}",
        f"checked: each side within (1 ± eps) of the original, eps = {eps_text}; "
        f"one trial = one seed, a layer fails if any side fails at any point; "
        f"CP = {100 * r['confidence']:g}% Clopper-Pearson interval",
    ]
    head = (f"{'layer':>5} {'shape':>12} {'sampled':>7} {'eps med':>7} {'fail/seeds':>10} {'CP upper':>8} "
            f"{'allowed':>8} {'pairs':>8} {'upper':>7} {'pair verdict':>17} {'err max':>7} {'bound/err':>9}  verdict")
    vacuous = False
    for title, key in (("in-sample (S, no assumption)", None), ("out-of-sample (T, assumes g(x) <= C s)", "out_of_sample")):
        lines += ["", title, head]
        for row in r["layers"]:
            st = row if key is None else row[key]
            vacuous |= st["vacuous"]
            allowed = _fmt(st["allowed_rate"], ".2g") + ("*" if st["vacuous"] else "")
            eps = row["eps_median"] if r["eps"] is None else r["eps"]
            lines.append(
                f"{row['layer']:>5} {_shape(row):>12} {row['sampled_sides_mean']:>7.1f} {_fmt(row['eps_median']):>7} "
                f"{str(st['failures']) + '/' + str(st['trials']):>10} {_fmt(st['failure_rate_upper'], '.2g'):>8} "
                f"{allowed:>8} {_fmt(st['pair_failure_rate'], '.2g'):>8} "
                f"{_fmt(st['pair_failure_rate_upper'], '.2g'):>7} {st['pair_verdict']:>17} "
                f"{_fmt(st['measured_error_max']):>7} {_fmt(st['bound_over_measured']):>9}  {verdict_words(st, eps)}"
            )
    lines.append("")
    lines.append("sampled: sides sampled per seed (mean); eps med: median claimed bound of pruned sides; "
                 "pairs: fraction of (side, point) pairs failing (allowed: delta); bound/err: median over "
                 "pruned sides of claimed eps / measured max error; verdict: failing seeds against the allowance")
    if vacuous:
        lines.append("* allowance >= 1: the union bound over sides and points is vacuous here; see pair verdict")
    net = r["network"]
    lines.append("")
    lines.append("network (output pre-activation, relative error per point and seed; bounds assume every side "
                 "meets its eps at the pruned network's own inputs):")
    for title, key in (("S", "in_sample"), ("T", "out_of_sample")):
        n = net[key]
        parts = [f"  {title}: measured median {_fmt(n['measured_median'])}, max {_fmt(n['measured_max'])}"]
        for name, label in (("product", "Delta-product bound"), ("forward", "forward bound")):
            b = n[name]
            if b is None:
                parts.append(f"{label}: not applicable")
                continue
            held = "-" if b["holds_fraction"] is None else f"{100 * b['holds_fraction']:.1f}%"
            parts.append(f"{label}: median {_fmt(b['bound_median'])} (finite at {100 * b['finite_fraction']:.0f}% "
                         f"of points, holds at {held}, bound/measured {_fmt(b['bound_over_measured'])})")
        lines.append("; ".join(parts))
    if net.get("forward_reason"):
        lines.append(f"  note: {net['forward_reason']}")
    if any(row["shape"].count("x") == 3 for row in r["layers"]):
        lines.append("convolutions: shape c_out x c_in x kh x kw / P patches per point; their points are the "
                     "(point, patch) rows of the patch matrix (docs/theory.md S15), patch reduction "
                     f"{r.get('patch_reduction') or 'the method default'}")
    lines.append("")
    lines.append("in-sample guarantees: " + ("hold (no layer violated)" if r["holds"] else "VIOLATED")
                 + "; out-of-sample: " + ("no violation" if r["holds_out_of_sample"] else "violated (the assumption g <= C s fails on T)"))
    return "\n".join(lines)


def plot_sweep(data: dict, path, *, title: str = ""):
    """The sweep as a PNG: one panel per layer, error against kept weights (log-log).

    Written atomically to ``path``; with ``path=None`` the PNG bytes are returned instead.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "--plot needs matplotlib, which is in the 'plot' extra: pip install 'sparsify[plot]'."
        ) from None
    from ..io import atomic_write

    methods = list(data)
    n_layers = data[methods[0]]["kept"].shape[1]
    fig, axes = plt.subplots(1, n_layers, figsize=(4.2 * n_layers, 3.6), squeeze=False)
    colours = {"det": "tab:blue", "rand": "tab:orange", "hybrid": "tab:green"}
    for k in range(n_layers):
        ax = axes[0, k]
        for method in methods:
            d = data[method]
            c = colours.get(method)
            ax.plot(d["kept"][:, k], d["bound"][:, k], "--", marker="^", color=c, label=f"{method} bound")
            ax.plot(d["kept"][:, k], d["measured"][:, k], "-", marker="o", color=c, label=f"{method} measured")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"kept weights m in layer {k}")
        ax.set_title(f"layer {k}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("relative error on S (median over pruned sides)")
    axes[0, -1].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = buf.getvalue()
    if path is None:
        return png
    atomic_write(path, lambda fh: fh.write(png), "--plot")
