"""sparsify — sensitivity-informed provable pruning (SiPP) of neural networks.

A NumPy reference implementation with Numba kernels. See README.md and
docs/theory.md.
"""
from . import baselines, bounds, reference, verify
from .activations import ACTIVATIONS
from .io import load, save
from .layers import AvgPool2d, Conv2d, Flatten, MaxPool2d, Residual
from .network import Dense, Network, from_arrays, random_mlp
from .prune import PruneResult, SideTable, prune
from .report import Report
from .sensitivity import sensitivity
from . import verify  # the subpackage: sparsify.verify.verify(...) is the check

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "AvgPool2d",
    "Conv2d",
    "Dense",
    "Flatten",
    "MaxPool2d",
    "Network",
    "PruneResult",
    "Report",
    "Residual",
    "SideTable",
    "from_arrays",
    "load",
    "prune",
    "random_mlp",
    "save",
    "sensitivity",
    "verify",
    "__version__",
    "baselines",
    "bounds",
    "reference",
    "verify",
]
