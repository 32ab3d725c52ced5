"""Golden vectors: fixed small networks with every intermediate step of SiPP, for ports.

Each *case* (``CASES``) is a fixed network — ``dense`` (three layers, signed
inputs, a tanh layer so a later layer's inputs are signed too), ``conv``
(Conv2d, max pool, flatten, two dense layers, nonnegative images) or
``residual`` (a convolution, a residual block with a 1x1-conv shortcut, an
average pool, a dense head) — in float64 and float32, with a fixed batch S. The
file ``golden_data/<case>.npz`` (loadable with ``allow_pickle=False``) holds,
under these keys (``k`` the prunable layer, in ``network.prunable_layers``
order):

==============================  ==============================================================
``X_S``                         the batch S
``layer.k.weight``, ``.bias``   the network's parameters (architecture: :func:`network`)
``keep``, ``budget``, ``seed``  the fraction, the integer budget it gives, the ``rng`` seed
``sensitivity.R.k``             ``sparsify.sensitivity(net, X_S, patch_reduction=R)``, R max/mean
``targets.A.k``                 per-side targets of rule A (global/balanced) from ``sensitivity.max``
                                (prune's default C and delta)
``RUN.target.k``                for each run of ``RUNS`` (``prune(net, X_S, keep, rng=seed, **RUNS[RUN])``):
                                the per-side targets, shape (n_out, 2);
``RUN.draws.k``                 the per-side draw counts N (0 where a side is not sampled);
``RUN.mask.k``                  the mask (True = kept), shaped like the weight;
``RUN.weight.k``                the kept weights, sampled ones reweighted, shaped like the weight;
``RUN.uniforms``                every uniform the sampler consumed, in consumption order
==============================  ==============================================================

Which comparisons are exact (``TOLERANCES``): sensitivities go through matrix
products whose summation order depends on the machine (SIMD width, tiling), so
they agree to a documented ``rtol`` per dtype. Everything after them is compared
**exactly given the stored sensitivities** (and the stored uniforms): targets,
masks, draw counts and reweighted weights are integer decisions or
IEEE-754 arithmetic in a fixed order. Compare a port's later steps fed with the
stored ``sensitivity`` arrays, not its own, so one rounding difference upstream
cannot flip a near-tie downstream. (The balanced rule, the hybrid rule and the
draw counts go through ``exp``/``log``/``sqrt``; a libm that differs in the last
bit moves those values by about 1e-15 relative. tests/test_golden.py checks that
every such decision in the shipped cases is at least 1e-9 away from its
boundary, so none can flip.)

Checkers (:func:`check_sensitivities`, :func:`check_targets`, :func:`check_run`)
raise an ``AssertionError`` naming the case, the step, the layer and the first
differing index. Regenerate the files with
``python -m sparsify.testing.golden generate DIR``; ``python -m
sparsify.testing.golden check`` recomputes every shipped case with this package.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = ["CASES", "DATA_DIR", "KEEP", "RUNS", "SEED", "TOLERANCES", "check_run", "check_sensitivities",
           "check_targets", "expected", "generate", "load", "network", "reproduce"]

#: the shipped cases: architecture-dtype
CASES = tuple(f"{arch}-{dtype}" for arch in ("dense", "conv", "residual") for dtype in ("float64", "float32"))
#: the keep fraction and the rng seed of every run
KEEP = 0.4
SEED = 2022
#: the prune options of each stored run (patch_reduction matters for convolutions only; C and delta
#: default to prune's, ``sparsify.bounds.DEFAULT_C`` and ``DEFAULT_DELTA``)
RUNS = {
    "det": dict(method="det", allocation="global", patch_reduction="mean"),
    "rand": dict(method="rand", allocation="balanced", patch_reduction="max"),
    # delta and C chosen so that the dense case's 100-input sides pass the hybrid rule's test
    "hybrid": dict(method="hybrid", allocation="balanced", patch_reduction="max", delta=0.5, C=1.0),
}
#: (rtol, atol) per step and dtype; steps not listed compare exactly (given the stored sensitivities)
TOLERANCES = {"sensitivity": {"float64": (1e-10, 1e-14), "float32": (1e-4, 1e-7)}}
#: where the shipped ``.npz`` files live (package data)
DATA_DIR = Path(__file__).resolve().parent / "golden_data"
_RUN_STEPS = ("target", "draws", "mask", "weight", "uniforms")
_REDUCTIONS = ("max", "mean")
_ALLOCATIONS = ("global", "balanced")


# --- the fixed networks --------------------------------------------------------------
def _architecture(arch: str, params: list):
    """The network of ``arch`` with ``params`` = [(weight, bias)] in prunable-layer order."""
    from .. import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Network, Residual

    p = list(params)
    if arch == "dense":
        return Network([Dense(*p[0], "relu"), Dense(*p[1], "tanh"), Dense(*p[2], "identity")])
    if arch == "conv":
        return Network([Conv2d(*p[0], "relu", padding=1), MaxPool2d(2), Flatten(), Dense(*p[1], "relu"),
                        Dense(*p[2], "identity")], input_shape=(2, 6, 6))
    if arch == "residual":
        block = Residual([Conv2d(*p[1], "relu", padding=1), Conv2d(*p[2], "identity", padding=1)], "relu",
                         shortcut=Conv2d(*p[3], "identity"))
        return Network([Conv2d(*p[0], "relu", padding=1), block, AvgPool2d(5), Flatten(),
                        Dense(*p[4], "identity")], input_shape=(2, 5, 5))
    raise ValueError(f"arch: must be one of ['conv', 'dense', 'residual'], got {arch!r}.")


#: weight shapes (prunable order), input shape of one point and |S| of each architecture
_SHAPES = {
    "dense": ([(100, 5), (4, 100), (3, 4)], (5,), 10),
    "conv": ([(4, 2, 3, 3), (5, 36), (3, 5)], (2, 6, 6), 5),
    "residual": ([(3, 2, 3, 3), (4, 3, 3, 3), (4, 4, 3, 3), (4, 3, 1, 1), (3, 4)], (2, 5, 5), 4),
}


def _make(arch: str, dtype: str):
    """Fixed parameters and S of ``arch`` (float64 draws, rounded once to ``dtype``)."""
    gen = np.random.default_rng({"dense": 11, "conv": 12, "residual": 13}[arch])
    shapes, point, n = _SHAPES[arch]
    params = []
    for shape in shapes:
        W = gen.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        W.reshape(-1)[gen.choice(W.size, max(1, W.size // 12), replace=False)] = 0.0  # zeros: on no side
        params.append((W.astype(dtype), (0.1 * gen.standard_normal(shape[0])).astype(dtype)))
    X = gen.random((n, *point)) if arch == "conv" else gen.standard_normal((n, *point))  # conv: nonnegative
    return params, X.astype(dtype)


# --- loading ----------------------------------------------------------------------------
def _check_case(case) -> str:
    if not isinstance(case, str) or case not in CASES:
        raise ValueError(f"case: must be one of {list(CASES)}, got {case!r}.")
    return case


def load(case: str, directory=None) -> dict:
    """The arrays of one case as a dict (a fresh copy each call; read with ``allow_pickle=False``)."""
    _check_case(case)
    path = Path(DATA_DIR if directory is None else directory) / f"{case}.npz"
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _n_layers(data: dict) -> int:
    return sum(1 for key in data if key.startswith("layer.") and key.endswith(".weight"))


def network(case: str, data: dict | None = None):
    """The case's :class:`sparsify.Network`, built from the stored parameters."""
    data = load(case) if data is None else data
    n = _n_layers(data)
    return _architecture(case.split("-")[0], [(data[f"layer.{k}.weight"], data[f"layer.{k}.bias"]) for k in range(n)])


def expected(case: str, step: str, variant: str, data: dict | None = None):
    """Stored arrays of one step: a list per layer, or one array for ``uniforms``.

    ``step`` "sensitivity" (variant: patch reduction "max"/"mean"), "targets"
    (variant: allocation "global"/"balanced"), or one of "target",
    "draws", "mask", "weight", "uniforms" (variant: a run of ``RUNS``).
    """
    data = load(case) if data is None else data
    if step in ("sensitivity", "targets"):
        choices = _REDUCTIONS if step == "sensitivity" else _ALLOCATIONS
        prefix = f"{step}.{variant}"
    elif step in _RUN_STEPS:
        choices, prefix = tuple(RUNS), f"{variant}.{step}"
    else:
        raise ValueError(f"step: must be one of {['sensitivity', 'targets', *_RUN_STEPS]}, got {step!r}.")
    if variant not in choices:
        raise ValueError(f"variant: for step {step!r} must be one of {list(choices)}, got {variant!r}.")
    if step == "uniforms":
        return data[prefix]
    return [data[f"{prefix}.{k}"] for k in range(_n_layers(data))]


# --- comparing --------------------------------------------------------------------------
def _compare(where: str, want, got, rtol: float = 0.0, atol: float = 0.0) -> None:
    """AssertionError naming ``where`` and the first differing index unless ``got`` matches ``want``."""
    got = np.asarray(got)
    if got.shape != want.shape:
        raise AssertionError(f"golden {where}: expected shape {want.shape}, got {got.shape}.")
    if want.dtype == bool or want.dtype.kind in "iu":
        bad = got != want
    else:
        w64, g64 = want.astype(np.float64), got.astype(np.float64)
        bad = ~(np.abs(g64 - w64) <= atol + rtol * np.abs(w64))
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        tol = "exact" if rtol == 0 and atol == 0 else f"rtol={rtol:g}, atol={atol:g}"
        raise AssertionError(
            f"golden {where}: {int(bad.sum())} of {bad.size} entries differ ({tol}); first at index {first}: "
            f"expected {want[first]!r}, got {got[first]!r}."
        )


def _per_layer(case: str, step: str, variant: str, want: list, got, rtol=0.0, atol=0.0) -> None:
    if not isinstance(got, (list, tuple)) or len(got) != len(want):
        raise AssertionError(f"golden {case}, step {step!r} ({variant}): expected a list of {len(want)} arrays "
                             f"(one per prunable layer), got {type(got).__name__}"
                             + (f" of length {len(got)}" if hasattr(got, "__len__") else "") + ".")
    for k, (w, g) in enumerate(zip(want, got)):
        _compare(f"{case}, step {step!r} ({variant}), layer {k}", w, g, rtol, atol)


def check_sensitivities(case: str, sensitivities, patch_reduction: str = "max", *, data=None) -> None:
    """Compare a port's sensitivities (one array per prunable layer) to the case's, within ``TOLERANCES``."""
    want = expected(case, "sensitivity", patch_reduction, data)
    rtol, atol = TOLERANCES["sensitivity"][str(want[0].dtype)]
    _per_layer(case, "sensitivity", patch_reduction, want, sensitivities, rtol, atol)


def check_targets(case: str, targets, allocation: str, *, data=None) -> None:
    """Compare per-side targets ((n_out, 2) per layer, from the stored ``sensitivity.max``) exactly."""
    _per_layer(case, "targets", allocation, expected(case, "targets", allocation, data), targets)


def check_run(case: str, run: str, *, data=None, **steps) -> None:
    """Compare the arrays of one run exactly; pass any of ``target``, ``draws``,
    ``mask``, ``weight`` (lists per layer) and ``uniforms`` (one array)."""
    data = load(case) if data is None else data
    unknown = sorted(set(steps) - set(_RUN_STEPS))
    if unknown or not steps:
        raise TypeError(f"check_run: give some of {list(_RUN_STEPS)} as keywords, got {sorted(steps)}.")
    for step in _RUN_STEPS:
        if step in steps:
            want = expected(case, step, run, data)
            if step == "uniforms":
                _compare(f"{case}, step 'uniforms' ({run})", want, steps[step])
            else:
                _per_layer(case, step, run, want, steps[step])


# --- computing (generation and self-check) ---------------------------------------------------
def _compute(net, X_S, s_given=None) -> dict:
    """Every stored step for ``net`` on ``X_S``; later steps from ``s_given`` (else recomputed) sensitivities."""
    from .. import prune, sensitivity, steps
    from .._selection import select_layers

    out = {}
    s = {r: sensitivity(net, X_S, patch_reduction=r) for r in _REDUCTIONS}
    for r in _REDUCTIONS:
        out.update({f"sensitivity.{r}.{k}": v for k, v in enumerate(s[r])})
    s = s if s_given is None else s_given
    budget = select_layers(net, KEEP, None, None, None).requested
    for a in _ALLOCATIONS:
        out.update({f"targets.{a}.{k}": v for k, v in enumerate(steps.side_targets(net, s["max"], budget, a))})
    for run, opts in RUNS.items():
        if s_given is None:  # the public entry point itself
            res = prune(net, X_S, keep=KEEP, rng=SEED, **opts)
            weights, tables, masks = [layer.weight for layer in res.network.prunable_layers], res.sides, res.masks
        else:
            consts = {key: opts[key] for key in ("C", "delta") if key in opts}
            weights, tables = steps.prune_given_sensitivities(net, s[opts["patch_reduction"]], budget,
                                                              opts["method"], opts["allocation"], SEED, **consts)
            masks = [w != 0 for w in weights]
        for k, (w, mk, tab) in enumerate(zip(weights, masks, tables)):
            out.update({f"{run}.target.{k}": tab.target, f"{run}.draws.{k}": tab.draws, f"{run}.mask.{k}": mk,
                        f"{run}.weight.{k}": w})
        stream = steps.uniform_stream(SEED, [tab.draws for tab in tables])
        out[f"{run}.uniforms"] = np.concatenate([np.zeros(0), *stream.values()])
    out.update(budget=np.asarray(budget))
    return out


def _case_arrays(case: str) -> dict:
    arch, dtype = case.split("-")
    params, X = _make(arch, dtype)
    net = _architecture(arch, params)
    out = {"X_S": X, "keep": np.asarray(KEEP), "seed": np.asarray(SEED)}
    for k, (W, b) in enumerate(params):
        out[f"layer.{k}.weight"], out[f"layer.{k}.bias"] = W, b
    out.update(_compute(net, X))
    return out


def generate(directory) -> list[Path]:
    """Write every case's ``<case>.npz`` into ``directory`` (created if needed); returns the paths."""
    from ..io import atomic_write_many

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for case in CASES:
        arrays = _case_arrays(case)
        items.append((directory / f"{case}.npz", lambda f, a=arrays: np.savez_compressed(f, **a), "DIR"))
    return atomic_write_many(items)


def reproduce(case: str, directory=None) -> None:
    """Recompute one stored case with this package and check every step (AssertionError on a difference).

    Sensitivities within ``TOLERANCES``; the later steps exactly, from the stored
    sensitivities; and, where this machine's sensitivities equal the stored ones
    bit for bit, ``sparsify.prune`` itself exactly.
    """
    data = load(case, directory)
    net = network(case, data)
    s_stored = {r: expected(case, "sensitivity", r, data) for r in _REDUCTIONS}
    got = _compute(net, data["X_S"], s_stored)
    for r in _REDUCTIONS:
        check_sensitivities(case, [got[f"sensitivity.{r}.{k}"] for k in range(len(net.prunable_layers))], r,
                            data=data)
    _compare(f"{case}, budget", data["budget"], got["budget"])
    n = len(net.prunable_layers)
    for a in _ALLOCATIONS:
        check_targets(case, [got[f"targets.{a}.{k}"] for k in range(n)], a, data=data)
    for run in RUNS:
        check_run(case, run, data=data, uniforms=got[f"{run}.uniforms"],
                  **{st: [got[f"{run}.{st}.{k}"] for k in range(n)] for st in _RUN_STEPS if st != "uniforms"})
    same_s = all(np.array_equal(got[f"sensitivity.{r}.{k}"], s_stored[r][k]) for r in _REDUCTIONS for k in range(n))
    if same_s:
        full = _compute(net, data["X_S"])
        for key, want in data.items():
            if key in full:
                _compare(f"{case}, {key} (sparsify.prune)", want, full[key])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 2 and argv[0] == "generate":
        for path in generate(argv[1]):
            print(f"wrote {path} ({path.stat().st_size} bytes)")
        return 0
    if len(argv) in (1, 2) and argv[0] == "check":
        for case in CASES:
            reproduce(case, argv[1] if len(argv) == 2 else None)
            print(f"{case}: ok")
        return 0
    print("usage: python -m sparsify.testing.golden generate DIR | check [DIR]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
