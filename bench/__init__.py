"""Benchmarks: every figure measured against a peer or a ceiling in the same run."""
