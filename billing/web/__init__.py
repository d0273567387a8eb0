"""The web entrypoint: the REST API under /api/v1, thin over the service functions."""
