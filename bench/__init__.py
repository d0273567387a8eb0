"""Benchmarks of the billing service (make bench)."""
