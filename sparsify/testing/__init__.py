"""Tools for testing sparsify and ports of SiPP to other frameworks.

* :mod:`sparsify.testing.strategies` — public Hypothesis strategies for
  networks, input batches, budgets and ``(eps, delta)`` pairs. It needs the
  ``test`` extra (``pip install sparsify[test]``); importing this package does
  not import Hypothesis, so ``import sparsify`` stays light.
* :mod:`sparsify.testing.golden` — golden vectors: fixed small networks (dense,
  convolutional, residual; float64 and float32) shipped with the expected
  sensitivities, targets, draw counts, uniforms, masks and kept weights, and
  checkers that name the first difference (docs/porting.md §12).

The statistical checks of the guarantees live in :mod:`sparsify.verify`
(``sparsify verify`` on the command line).
"""
