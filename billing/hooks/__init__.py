"""Webhooks over HTTP: signed POSTs of events to the configured endpoints."""
