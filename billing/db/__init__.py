"""Persistence: tables, the engine, migrations and the repository of the invoice ledger."""
