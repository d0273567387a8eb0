"""End-to-end tests: the billing CLI as processes, real Celery workers, the benchmarks."""
