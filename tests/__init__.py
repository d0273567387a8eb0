"""The test suite in layers: unit, integration (real services), e2e (processes and workers)."""
