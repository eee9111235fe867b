"""Benchmarks (`make bench`): not tests; they measure and report, they do not assert."""
