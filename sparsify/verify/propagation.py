"""Network-level propagation of the per-side bounds (docs/theory.md S12, "Network level").

The per-side bounds (:mod:`sparsify.bounds`) say how far each side of one
pruned layer is from the original at given inputs. These functions turn
per-layer tolerances into a bound on the output: :func:`propagate` through
the cancellation factors of :func:`cancellation`, :func:`propagate_forward`
neuron by neuron through the Lipschitz constants of the activations, and
:func:`layer_tolerances` the other way round (per-layer tolerances for an
output target). Each is a deterministic implication: *if* every side meets
its tolerance at the inputs the pruned network feeds it, the output error is
at most the returned value. ``sparsify verify`` reports them beside the
measured output error; tests/test_propagation.py checks them.
"""
from __future__ import annotations

import numpy as np

from ..bounds import _scalar_or_array

__all__ = [
    "LIPSCHITZ",
    "RELATIVE_ERROR_ACTIVATIONS",
    "cancellation",
    "layer_tolerances",
    "propagate",
    "propagate_forward",
]

#: Activations that pass an entrywise relative error through unchanged or
#: smaller: ``|phi(z') - phi(z)| <= e |phi(z)|`` whenever ``|z' - z| <= e |z|``
#: with ``e < 1`` (sign-preserving and ``phi(t z)/phi(z)`` between 1 and ``t``).
#: ``sigmoid`` is not one of them (``sigmoid(0) != 0``), so the network-level
#: bound of :func:`propagate` does not apply after a sigmoid.
RELATIVE_ERROR_ACTIVATIONS = frozenset({"relu", "leaky_relu", "identity", "linear", "tanh"})


def cancellation(A, W, b=None):
    """Cancellation factors ``Delta_i(x) = sum_k |W_ik a_k(x)| / |z_i(x)|``, shape (n_points, n_out).

    ``A`` (n_points, n_in) is the layer's input, ``z = A @ W.T + b``. ``Delta``
    measures how much the terms of ``z_i`` cancel: an entrywise relative error
    ``e`` on the inputs (or ``e`` on each weight side) moves ``z_i`` by at most
    ``e Delta_i |z_i|``. Where the numerator is 0, ``z_i(x) = b_i`` cannot move
    and ``Delta = 0``; where only ``z_i(x) = 0``, ``Delta = inf``.
    """
    A = np.asarray(A, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    num = np.abs(A) @ np.abs(W).T
    z = A @ W.T
    if b is not None:
        z = z + np.asarray(b, dtype=np.float64)
    absz = np.abs(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(num == 0, 0.0, np.where(absz == 0, np.inf, num / absz))
    return out


def propagate(eps_layers, delta_layers, *, activations=None, per_layer: bool = False):
    """Propagated relative error of the output: ``E_l = max_i Delta_li [(1 + eps_li)(1 + E_{l-1}) - 1]``, ``E_0 = 0``.

    ``eps_layers[l]`` is the tolerance of the neurons of layer ``l`` (a scalar
    or an array of shape (n_out,), the larger of each neuron's two sides);
    ``delta_layers[l]`` holds the cancellation factors (:func:`cancellation`)
    of layer ``l``, shape (n_points, n_out) or (n_out,) or a scalar. Returns
    ``E_L`` per point (or the list of all ``E_l`` with ``per_layer=True``);
    a float when no input has a points axis.

    Statement (docs/theory.md, "Network level"): suppose every activation is
    in :data:`RELATIVE_ERROR_ACTIVATIONS`, and at a point x each side of each
    pruned layer ``l`` is within ``(1 ± eps_l)`` of the original layer's side
    *at the input the pruned network feeds it*. Then every neuron of layer
    ``l`` satisfies ``|z_hat_i - z_i| <= E_l |z_i|``; in particular the output
    relative error is at most ``E_L`` (for the output layer's pre-activation;
    after an identity output activation, or when ``E_L < 1``, for the output
    itself). Proof by induction: the upstream error
    moves ``z_i`` by at most ``E_{l-1} Delta_i |z_i|`` and the pruning of the
    sides by at most ``eps_l (1 + E_{l-1}) Delta_i |z_i|``. Unrolled,
    ``E_L = sum_l eps_l D_l prod_{k>l} (1 + eps_k)`` for scalar tolerances,
    ``D_l = prod_{k>=l} Delta_k``. Only the hypothesis (per-side error at
    pruned inputs) is probabilistic; the implication is exact.

    The activations pass the relative error on only while it is below 1 (a
    larger error can flip the sign of ``z``). So once ``E_l >= 1`` at a hidden
    layer whose activation is not the identity, every later ``E`` is ``inf``
    (no claim). ``activations`` (one name per layer) lets identity layers keep
    their finite bound; without it every hidden layer is treated as nonlinear.
    """
    eps_layers = list(eps_layers)
    delta_layers = list(delta_layers)
    if len(eps_layers) != len(delta_layers):
        raise ValueError(
            f"delta_layers: expected one entry per layer ({len(eps_layers)} tolerances), got {len(delta_layers)}."
        )
    if activations is None:
        linear = [False] * len(eps_layers)
    else:
        activations = list(activations)
        if len(activations) != len(eps_layers):
            raise ValueError(
                f"activations: expected one name per layer ({len(eps_layers)}), got {len(activations)}."
            )
        for name in activations[:-1]:
            if name not in RELATIVE_ERROR_ACTIVATIONS:
                raise ValueError(
                    f"activations: the network-level bound needs activations that preserve relative errors "
                    f"({sorted(RELATIVE_ERROR_ACTIVATIONS)}); got {name!r} on a hidden layer."
                )
        linear = [name in ("identity", "linear") for name in activations]
    E = np.float64(0.0)
    history = []
    for eps_l, D_l in zip(eps_layers, delta_layers):
        eps_l = np.asarray(eps_l, dtype=np.float64)
        D_l = np.asarray(D_l, dtype=np.float64)
        if np.any(eps_l < 0) or np.any(D_l < 0):
            raise ValueError("eps_layers and delta_layers: tolerances and cancellation factors must be >= 0.")
        # neurons along the last axis; E (one value per point) broadcasts over them
        bracket = (1.0 + eps_l) * (1.0 + np.asarray(E)[..., None]) - 1.0
        with np.errstate(invalid="ignore"):
            per_neuron = np.where(bracket == 0, 0.0, D_l * bracket)  # exact layer, exact input: no error
        E = np.max(np.atleast_1d(per_neuron), axis=-1)
        history.append(_scalar_or_array(np.asarray(E)))
        if not linear[len(history) - 1]:
            E = np.where(E >= 1.0, np.inf, E)  # the sign of z may flip: nothing passes the activation
    return history if per_layer else history[-1]


def layer_tolerances(eps, delta_max):
    """Per-layer tolerances ``eps_l = eps / (L D_l)``, ``D_l = prod_{k >= l} Delta_k`` (downstream product).

    ``delta_max`` holds one cancellation factor per layer (estimated on S,
    e.g. the largest ``Delta_i(x)`` over neurons and points of S). With these
    tolerances :func:`propagate` gives ``E_L = (eps/L) sum_l prod_{k>l}(1 + eps_k)
    <= eps prod_l (1 + eps_l)``, i.e. the output is within about ``(1 ± eps)``
    (docs/theory.md, "Network level"). The CoreNet construction uses the same
    downstream product.
    """
    d = np.asarray(delta_max, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"delta_max: expected one factor per layer (a 1-D array), got shape {d.shape}.")
    if np.any(~(d > 0)) or np.any(~np.isfinite(d)):
        raise ValueError(f"delta_max: cancellation factors must be finite and > 0, got {d.tolist()}.")
    eps = float(eps)
    if not eps > 0:
        raise ValueError(f"eps: the output tolerance must be > 0, got {eps}.")
    downstream = np.cumprod(d[::-1])[::-1]
    return eps / (d.size * downstream)


#: Lipschitz constants of the activations (``|phi(u) - phi(v)| <= L |u - v|``).
LIPSCHITZ = {"relu": 1.0, "leaky_relu": 1.0, "identity": 1.0, "linear": 1.0, "tanh": 1.0, "sigmoid": 0.25}


def propagate_forward(eps_layers, weights, inputs, activations, biases=None):
    """Per-neuron absolute error bound of the output pre-activation, layer by layer.

    ``d_l = (1 + eps_l) * (u_{l-1} @ |W_l|.T) + eps_l * (|A_l| @ |W_l|.T)`` with
    ``u_0 = 0``; ``u_l`` bounds ``|a_hat - a|`` after the activation:
    ``u_l = Lip(phi_l) d_l``, and, for an activation in
    :data:`RELATIVE_ERROR_ACTIVATIONS` where ``d_l < |z_l|`` (no sign flip),
    also ``u_l <= (d_l / |z_l|) |a_l|``; the smaller is used. Returns ``d_L``,
    shape (n_points, n_out). ``inputs[l]`` is the original network's input
    ``A_l`` of layer ``l`` at the points (the trace), ``eps_layers[l]`` a scalar
    or one tolerance per neuron (the larger of its two sides), ``biases`` the
    layers' biases (None entries allowed; needed for ``z_l``).

    Same hypothesis as :func:`propagate` (each pruned side within ``(1 ± eps_l)``
    at the inputs the pruned network feeds it), but errors are tracked per
    neuron, so one neuron's cancellation is not charged to all others and a
    sign flip is paid for through the Lipschitz constant instead of giving up.
    Proof: ``z_hat_i - z_i = sum_k (w_hat_ik - w_ik) a_hat_k + sum_k w_ik (a_hat_k - a_k)``;
    the first sum is at most ``eps_i sum_k |w_ik| |a_hat_k| <= eps_i sum_k |w_ik| (|a_k| + u_k)``
    by the per-side hypothesis, the second at most ``sum_k |w_ik| u_k``. By
    induction ``d_li <= E_l |z_li|`` wherever :func:`propagate` is finite, so
    this bound is never larger (docs/theory.md, "Network level").
    """
    eps_layers, weights, inputs, activations = list(eps_layers), list(weights), list(inputs), list(activations)
    biases = [None] * len(weights) if biases is None else list(biases)
    if not (len(eps_layers) == len(weights) == len(inputs) == len(activations) == len(biases)):
        raise ValueError(
            "eps_layers, weights, inputs, activations, biases: expected one entry per layer each, got lengths "
            f"{len(eps_layers)}, {len(weights)}, {len(inputs)}, {len(activations)}, {len(biases)}."
        )
    u = None
    d = None
    for l, (eps_l, W, A, act, b) in enumerate(zip(eps_layers, weights, inputs, activations, biases)):
        if act not in LIPSCHITZ:
            raise ValueError(f"activations: no Lipschitz constant known for {act!r}; known: {sorted(LIPSCHITZ)}.")
        W = np.asarray(W, dtype=np.float64)
        A = np.asarray(A, dtype=np.float64)
        absW = np.abs(W)
        eps_l = np.asarray(eps_l, dtype=np.float64)
        d = eps_l * (np.abs(A) @ absW.T)
        if u is not None:
            d = d + (1.0 + eps_l) * (u @ absW.T)
        u = LIPSCHITZ[act] * d
        if act in RELATIVE_ERROR_ACTIVATIONS and l + 1 < len(weights):
            z = A @ W.T + (0.0 if b is None else np.asarray(b, dtype=np.float64))
            a_next = np.asarray(inputs[l + 1], dtype=np.float64)
            absz = np.abs(z)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(d < absz, d / np.where(absz > 0, absz, 1.0) * np.abs(a_next), np.inf)
            u = np.minimum(u, rel)
    return d
