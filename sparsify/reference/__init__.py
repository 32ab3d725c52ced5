"""Readable NumPy reference of every SiPP computation (docs/theory.md S1–S16).

This package is the ground truth for the tests and the text to read when
porting the method. It favours clarity over speed: loops go over points or
sides, and every line maps to one formula of docs/theory.md. The fast paths
in :mod:`sparsify.sensitivity`, :mod:`sparsify.sampling`,
:mod:`sparsify.allocation` and :mod:`sparsify.reconstruct` must agree with
these functions (to rounding for sensitivities, exactly for sampling given the
same uniforms). It never imports the fast path.

- :mod:`~sparsify.reference.dense`: S1–S7, S11 and the report's side errors;
- :mod:`~sparsify.reference.allocation`: S10;
- :mod:`~sparsify.reference.conv`: S15 (convolutions, pools, residual blocks);
- :mod:`~sparsify.reference.reconstruct`: S16.
"""
from __future__ import annotations

from .allocation import *  # noqa: F401,F403
from .allocation import __all__ as _allocation
from .conv import *  # noqa: F401,F403
from .conv import __all__ as _conv
from .dense import *  # noqa: F401,F403
from .dense import __all__ as _dense
from .reconstruct import *  # noqa: F401,F403
from .reconstruct import __all__ as _reconstruct

__all__ = sorted(_dense + _allocation + _conv + _reconstruct)
