"""Benchmarks of sparsify; run ``python -m benchmarks`` (see benchmarks/run.py)."""
