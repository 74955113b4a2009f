"""Benchmarks: run each module as a script from the repo root (see bench/README.md)."""
