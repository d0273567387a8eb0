"""What finance does to the ledger after a close: inspect and void invoices, drive email."""
