"""The month close: its steps written once, driven in one process or on Celery workers."""
