"""Pure unit tests: no database, no network, no subprocess servers."""
