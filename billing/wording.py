"""How counts and ranges read in messages: "1 invoice", "3 invoices", "INV-1 to INV-3"."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 invoice', '2 invoices'; `many` when the plural is not the noun and an s."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def span(first: str, last: str) -> str:
    """'INV-1 to INV-3' for a range, just 'INV-1' for one."""
    return first if first == last else f"{first} to {last}"
