"""Refit methods of the experiment: a selection followed by least squares, and OBS.

A method name ending in ``+ls`` (e.g. ``sipp-hybrid+ls``) selects the kept
weights exactly like the method before the suffix -- same network, same S, same
random numbers -- and then refits the kept weights and the biases by ridge least
squares to the dense network's pre-activations (:mod:`sparsify.reconstruct`,
docs/theory.md S16). ``obs`` is the optimal-brain-surgeon baseline with
SparseGPT's column sweep (:func:`sparsify.obs.prune_obs`), which selects and
updates in one pass; ``obs+ls`` refits after it.

Calibration points are S followed by ``calibration`` points of the training
split (drawn per seed, the same for every method); ``lam`` is the relative ridge
of the refit (and the damping of ``obs+ls``, as in
:func:`sparsify.baselines.prune_baseline`); plain ``obs`` keeps its own default
damping (:data:`sparsify.obs.DEFAULT_LAM`). No bound of the paper applies to a
refitted or updated network: its report carries measured errors only.

Random numbers: a ``+ls`` method uses the position of its base method
(:func:`method_id`), so ``sipp-hybrid+ls`` refits the very mask ``sipp-hybrid``
drew; ``obs`` has the fixed position :data:`OBS_ID` (it draws nothing). The
positions of :data:`~sparsify.experiment.config.METHODS` are unchanged, so runs
without refit methods give the same bits as before they existed.
"""
from __future__ import annotations

import numpy as np

from .config import METHODS, SIPP_METHODS

__all__ = ["OBS", "OBS_ID", "REFIT_METHODS", "REFIT_SUFFIX", "all_methods", "check_method",
           "compare", "format_comparison", "is_refit", "method_id", "prune_refit", "split_method"]

REFIT_SUFFIX = "+ls"
OBS = "obs"
#: position of ``obs`` in the seeding of random numbers (far from the positions of METHODS and "dense").
OBS_ID = 100
#: every refit method: each method of METHODS with the refit, OBS, and OBS with the refit.
REFIT_METHODS = tuple(m + REFIT_SUFFIX for m in METHODS) + (OBS, OBS + REFIT_SUFFIX)


def all_methods() -> tuple:
    """Every method name the experiment accepts, the faithful ones (METHODS) first."""
    return METHODS + REFIT_METHODS


def split_method(name: str) -> tuple[str, bool]:
    """``(base method, refit?)`` of a method name: ``"wanda+ls"`` -> ``("wanda", True)``."""
    if name.endswith(REFIT_SUFFIX):
        return name[: -len(REFIT_SUFFIX)], True
    return name, False


def is_refit(name: str) -> bool:
    """Whether the method changes the values of kept weights (a ``+ls`` method or OBS)."""
    base, refit = split_method(name)
    return refit or base == OBS


def check_method(value, label: str) -> None:
    """Refuse a method name the experiment does not know, naming the base of an unknown ``+ls`` name."""
    if not isinstance(value, str):
        raise TypeError(f"{label}: must be a method name (str), got {value!r}.")
    if value in METHODS or value in REFIT_METHODS:
        return
    base, refit = split_method(value)
    if refit:
        raise ValueError(f"{label}: {value!r} refits the unknown base method {base!r}; a '{REFIT_SUFFIX}' "
                         f"method refits one of {list(METHODS) + [OBS]} (e.g. 'sipp-hybrid{REFIT_SUFFIX}').")
    raise ValueError(f"{label}: must be one of {list(METHODS) + [OBS]}, optionally followed by "
                     f"'{REFIT_SUFFIX}' (least-squares refit of the kept weights), got {value!r}.")


def method_id(name: str) -> int:
    """The position that seeds the random numbers of ``name`` (see the module docstring)."""
    base, _ = split_method(name)
    if base == OBS:
        return OBS_ID
    return (METHODS + ("dense",)).index(base)


def prune_refit(method: str, network, X_S, y_S, budget: int, rng, *, delta: float, C: float, calibration=None,
                lam: float | None = None, weight_decay: float | None = None):
    """Prune with a refit method to ``budget`` kept weights; returns the :class:`~sparsify.prune.PruneResult`.

    ``calibration`` (array of extra points, or None) is appended to S for the
    refit, and for ``obs`` to the points its Hessians are built from;
    ``weight_decay`` is the lambda of the ``undecayed`` score, as for the base method.
    """
    from ..baselines import prune_baseline
    from ..obs import prune_obs
    from ..prune import prune
    from ..reconstruct import with_options

    base, refit = split_method(method)
    if calibration is not None and len(calibration) == 0:
        calibration = None
    if base == OBS and not refit:
        points = X_S if calibration is None else np.concatenate([X_S, calibration], axis=0)
        return prune_obs(network, points, budget=budget)
    options = dict(reconstruct=True, calibration=calibration, lam=lam)
    if base in SIPP_METHODS:
        sipp_method, allocation = SIPP_METHODS[base]
        return prune(network, X_S, budget=budget, method=sipp_method, allocation=allocation, rng=rng,
                     delta=delta, C=C, **options)
    if base == OBS:
        return prune_baseline(network, X_S, budget=budget, method=OBS, **options)
    extra = {} if base != "undecayed" or weight_decay is None else dict(weight_decay=weight_decay)

    def select(S, nm):  # exactly the base method's call, on S read once
        return prune_baseline(network, S, budget=budget, method=base, y_S=y_S, rng=rng, **extra)

    return with_options(select, network, X_S, keep=None, budget=budget, pattern=None, **options)


def compare(rows, method: str, other: str, mode: str = "oneshot") -> dict:
    """``{keep: mean accuracy of method - mean accuracy of other}`` (fractions) over the keeps both have.

    Means are over the seeds of each method; a keep only one of them has is left out.
    """
    groups: dict = {}
    for r in rows:
        if r["mode"] == mode and r["method"] in (method, other):
            groups.setdefault((r["method"], float(r["keep"])), []).append(float(r["test_accuracy"]))
    keeps = sorted({k for (_, k) in groups if (method, k) in groups and (other, k) in groups}, reverse=True)
    return {k: float(np.mean(groups[(method, k)]) - np.mean(groups[(other, k)])) for k in keeps}


def format_comparison(rows, method: str, other: str, mode: str = "oneshot") -> str:
    """One line: the mean and the worst gap (percentage points) of ``method`` over ``other``."""
    gaps = compare(rows, method, other, mode)
    if not gaps:
        return f"{method} vs {other} ({mode}): no kept fraction in common"
    worst = min(gaps, key=gaps.get)
    per_keep = ", ".join(f"{k:g}: {100 * g:+.1f}" for k, g in gaps.items())
    return (f"{method} vs {other} ({mode}, test accuracy, points): mean {100 * np.mean(list(gaps.values())):+.1f}, "
            f"worst {100 * gaps[worst]:+.1f} at keep {worst:g} (per keep {per_keep})")
