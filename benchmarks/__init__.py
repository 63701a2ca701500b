"""Benchmarks: `make bench` (full) and `make bench-quick` (CI); see benchmarks/run.py and the README."""
