"""Benchmarks: `make bench` (full) and `make bench-quick` (CI); see benchmarks/run.py, docs/benchmarks.md."""
