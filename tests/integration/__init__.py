"""Integration tests: real PostgreSQL, SQLite, Redis, SMTP servers, the emulator over HTTP."""
