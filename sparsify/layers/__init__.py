"""Layer kinds beyond :class:`~sparsify.Dense` (which lives in :mod:`sparsify.network`):
convolution, pooling, flattening and residual blocks, and the walks that list a
network's weight layers (docs/theory.md S15)."""
from .conv import Conv2d
from .pool import AvgPool2d, Flatten, MaxPool2d
from .residual import KINDS, Residual, check_layer, propagate_shapes, replace_weight_layers, run_layers, weight_layers

__all__ = ["AvgPool2d", "Conv2d", "Flatten", "KINDS", "MaxPool2d", "Residual", "check_layer",
           "propagate_shapes", "replace_weight_layers", "run_layers", "weight_layers"]
