"""Statistics of ``sparsify verify``: exact binomial and Hoeffding intervals, and the verdict rule.

How trials are counted is explained in docs/theory.md ("Checking the
guarantees"). Both tests use one rule, at confidence ``c`` with a two-sided
interval ``[lower, upper]`` around the observed rate and an allowance ``p0``:

* ``"violated"``: ``lower > p0`` — the data show the failure rate exceeds what
  the theory allows;
* ``"holds"``: ``rate <= p0`` — no failures beyond the allowance (with a tiny
  ``delta``: no failures at all);
* ``"not enough trials"``: otherwise (more failures than allowed, but few
  enough to be chance).

:func:`verdict` applies it to the Clopper–Pearson interval of the failing
seeds, :func:`pair_verdict` to the Hoeffding interval of the per-seed fraction
of failing (side, point) pairs.
"""
from __future__ import annotations

import math

__all__ = [
    "VERDICTS",
    "clopper_pearson",
    "hoeffding_interval",
    "pair_verdict",
    "verdict",
    "verdict_words",
]

VERDICTS = ("holds", "violated", "not enough trials")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper–Pearson interval for a binomial rate with ``k`` successes in ``n`` trials.

    ``[0, 1]`` when ``n = 0`` (no trial says nothing).
    """
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=float(confidence), method="exact")
    return float(ci.low), float(ci.high)


def hoeffding_interval(mean: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Hoeffding interval for the mean of ``n`` i.i.d. variables in [0, 1].

    ``mean ± sqrt(ln(2 / (1 - confidence)) / (2 n))``, clipped to [0, 1].
    """
    if n <= 0:
        return 0.0, 1.0
    half = math.sqrt(math.log(2.0 / (1.0 - confidence)) / (2.0 * n))
    return max(0.0, mean - half), min(1.0, mean + half)


def _rule(lower: float, rate: float, allowed: float) -> str:
    """The verdict of the module docstring: violated, holds or not enough trials."""
    if lower > allowed:
        return "violated"
    if rate <= allowed:
        return "holds"
    return "not enough trials"


def verdict(k: int, n: int, allowed: float, confidence: float = 0.95) -> dict:
    """Failure statistics and the verdict for ``k`` failures in ``n`` independent trials.

    ``allowed`` is the largest failure probability per trial the theory
    permits (clipped to 1). Returns the counts, the rate ``k/n``, its
    Clopper–Pearson interval, ``allowed_rate``, ``verdict`` (the rule of the
    module docstring), ``confirmed`` (even the upper end is within the
    allowance, which no number of trials reaches for an allowance near 1e-16)
    and ``vacuous`` (the allowance is 1: every outcome is allowed).
    """
    lower, upper = clopper_pearson(k, n, confidence)
    rate = k / n if n else 0.0
    allowed = float(min(1.0, allowed))
    return dict(trials=int(n), failures=int(k), failure_rate=rate, failure_rate_lower=lower,
                failure_rate_upper=upper, allowed_rate=allowed, verdict=_rule(lower, rate, allowed),
                confirmed=bool(upper <= allowed), vacuous=bool(allowed >= 1.0))


def pair_verdict(mean: float, n: int, allowed: float, confidence: float = 0.95) -> tuple[float, float, str]:
    """``(lower, upper, verdict)`` for the mean ``mean`` of ``n`` i.i.d. fractions in [0, 1] against ``allowed``.

    The interval is :func:`hoeffding_interval`; the verdict is the rule of the
    module docstring.
    """
    lower, upper = hoeffding_interval(mean, n, confidence)
    return lower, upper, _rule(lower, mean, allowed)


def verdict_words(stats: dict, eps: float | None = None) -> str:
    """The verdict of ``stats`` (a :func:`verdict` result) in words, saying when it is vacuous.

    A bare ``"holds"`` next to failures would read as a contradiction; it can
    only happen when the claim allows them. Failures under an allowance of 1
    (the union bound over sides and points says nothing) or under a tolerance
    ``eps > 1`` (a side may then lose all of its pre-activation, so the bound
    says nothing) are named, e.g. ``"holds (vacuous: eps > 1, the bound says
    nothing)"``. ``eps`` is the tolerance the checked sides were held to (the
    user's, or a typical claimed one); ``None`` when unknown. Any other
    verdict is returned unchanged.
    """
    v = stats["verdict"]
    if v != "holds" or not stats["failures"]:
        return v
    reasons = []
    if stats["allowed_rate"] >= 1.0:
        reasons.append("allowance >= 1")
    if eps is not None and eps > 1.0:
        reasons.append("eps > 1")
    if not reasons:
        return v
    what = "the bound says" if len(reasons) == 1 else "the bounds say"
    return f"holds (vacuous: {' and '.join(reasons)}, {what} nothing)"
