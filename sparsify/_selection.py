"""Which layers are pruned, and with which budget (shared by ``prune`` and the baselines).

``keep`` may be one fraction for all pruned layers (one budget, allocated over
them together), one fraction per layer (a sequence with an entry for every
layer) or a mapping ``{layer index: fraction}`` (the layers named are pruned,
each with its own budget; the others stay dense). ``layers=`` names the layers
to prune, ``exclude=`` the layers to leave dense; an excluded layer keeps every
weight and is not counted in the budget (docs/theory.md S13).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ._validation import check_keep_budget, check_scalar

__all__ = ["Selection", "select_layers"]


class Selection(NamedTuple):
    """The outcome of :func:`select_layers`.

    pruned: indices of the layers that are pruned; excluded: the others (left
    dense); groups: ``(layer indices, budget)`` pairs, each budget allocated
    over its layers together; requested: the sum of the budgets; layer_keep:
    ``{layer: fraction}`` when each layer had its own fraction, else None.
    """

    pruned: list
    excluded: list
    groups: list
    requested: int
    layer_keep: dict | None


def _index(value, name: str, n_layers: int) -> int:
    k = check_scalar(value, name, kind="int", low=-n_layers, high=n_layers - 1)
    return k + n_layers if k < 0 else k


def _index_list(value, name: str, n_layers: int) -> list:
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = [value]
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name}: expected a list of layer indices (e.g. {name}=[0, {n_layers - 1}]), "
                        f"got {type(value).__name__}.")
    out = [_index(v, f"{name}[{i}]", n_layers) for i, v in enumerate(value)]
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: each layer may be named once, got {list(value)!r}.")
    return sorted(out)


def _fraction(value, name: str) -> float:
    return check_scalar(value, name, low=0.0, low_open=True, high=1.0)


def _per_layer_budget(fraction: float, size: int) -> int:
    return max(1, min(size, int(round(fraction * size))))  # the rule of check_keep_budget, per layer


def select_layers(network, keep=None, budget=None, layers=None, exclude=None) -> Selection:
    """Validate ``keep``/``budget``/``layers``/``exclude`` for ``network`` (see the module docs).

    Layer indices may be negative (``-1`` is the last layer). Raises TypeError
    or ValueError naming the parameter for a fraction outside (0, 1], a per-layer
    ``keep`` of the wrong length, an unknown or repeated layer index, both
    ``layers=`` and ``exclude=``, or a selection that prunes no layer.
    """
    n = len(network.prunable_layers)
    sizes = [int(layer.weight.size) for layer in network.prunable_layers]
    if layers is not None and exclude is not None:
        raise ValueError("layers, exclude: give at most one of layers= (the layers to prune) and exclude= "
                         f"(the layers to leave dense); got layers={layers!r}, exclude={exclude!r}.")
    per_layer = isinstance(keep, Mapping) or (
        keep is not None and not isinstance(keep, (str, bytes)) and np.ndim(keep) == 1)
    if per_layer:
        if budget is not None:
            raise ValueError("prune: give exactly one of keep= and budget=; got a per-layer keep and "
                             f"budget={budget!r}.")
        if layers is not None or exclude is not None:
            raise ValueError("keep: a per-layer keep already says which layers are pruned (to leave a layer "
                             "dense, leave it out of a {layer: fraction} mapping); do not combine it with "
                             "layers= or exclude=.")
        if isinstance(keep, Mapping):
            fractions = {}
            for key, value in keep.items():
                k = _index(key, "keep (a layer index)", n)
                if k in fractions:
                    raise ValueError(f"keep: layer {k} is named twice, got keys {list(keep)!r}.")
                fractions[k] = _fraction(value, f"keep[{key!r}]")
            if not fractions:
                raise ValueError("keep: the mapping {layer index: fraction} is empty; nothing would be pruned.")
        else:
            values = list(keep)
            if len(values) != n:
                raise ValueError(f"keep: a per-layer keep needs one fraction per layer ({n} layers), got "
                                 f"{len(values)}: {values!r}. Use a mapping {{layer: fraction}} for some layers.")
            fractions = {k: _fraction(v, f"keep[{k}]") for k, v in enumerate(values)}
        pruned = sorted(fractions)
        groups = [([k], _per_layer_budget(fractions[k], sizes[k])) for k in pruned]
        layer_keep = {k: fractions[k] for k in pruned}
    else:
        if layers is not None:
            pruned = _index_list(layers, "layers", n)
            if not pruned:
                raise ValueError("layers: the list of layers to prune is empty; nothing would be pruned.")
        else:
            dense = [] if exclude is None else _index_list(exclude, "exclude", n)
            pruned = [k for k in range(n) if k not in dense]
            if not pruned:
                raise ValueError(f"exclude: every layer ({n}) is excluded; nothing would be pruned.")
        B = check_keep_budget(keep, budget, sum(sizes[k] for k in pruned))
        groups = [(pruned, B)]
        layer_keep = None
    excluded = [k for k in range(n) if k not in pruned]
    return Selection(pruned, excluded, groups, int(sum(b for _, b in groups)), layer_keep)
