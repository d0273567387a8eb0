"""Celery entrypoints: the app, its schedule and thin tasks over billing.close.distributed."""
