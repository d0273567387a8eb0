"""Statements and reports: PDF (Jinja2 + WeasyPrint), CSV, and the period summary."""
