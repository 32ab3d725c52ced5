"""Tools for testing sparsify and ports of SiPP to other frameworks.

* :mod:`sparsify.testing.strategies` — public Hypothesis strategies for
  networks, input batches, budgets and ``(eps, delta)`` pairs. It needs the
  ``test`` extra (``pip install sparsify[test]``); importing this package does
  not import Hypothesis, so ``import sparsify`` stays light.

The statistical checks of the guarantees live in :mod:`sparsify.verify`
(``sparsify verify`` on the command line).
"""
