"""The completeness check: per-org totals of the grouped fetch against an org-only fetch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from billing.domain import UsageRecord

CHECKED_FIELDS = ("duration_ms", "workspace_bytes_in", "workspace_bytes_out", "num_sessions")


@dataclass(frozen=True)
class OrgDifference:
    """An org whose grouped usage does not add up to its org-level total."""

    org_id: str
    field: str
    grouped: int
    reference: int

    def __str__(self) -> str:
        delta = self.grouped - self.reference
        return (
            f"{self.org_id} {self.field}: grouped {self.grouped} "
            f"vs total {self.reference} ({delta:+d})"
        )


def add_org_totals(totals: dict[str, dict[str, int]], records: Iterable[UsageRecord]) -> None:
    """Add records to per-org sums of the checked fields (a few integers per org)."""
    for record in records:
        org = totals.setdefault(record.org_id, dict.fromkeys(CHECKED_FIELDS, 0))
        for name in CHECKED_FIELDS:
            org[name] += getattr(record, name)


def reference_org_totals(records: Iterable[UsageRecord]) -> dict[str, dict[str, int]]:
    """Per-org sums of the checked fields from the org-only fetch."""
    totals: dict[str, dict[str, int]] = {}
    add_org_totals(totals, records)
    return totals


def compare_org_totals(
    grouped: dict[str, dict[str, int]], reference: dict[str, dict[str, int]]
) -> list[OrgDifference]:
    """Every (org, field) where the two fetches disagree, in org order."""
    empty = dict.fromkeys(CHECKED_FIELDS, 0)
    differences: list[OrgDifference] = []
    for org_id in sorted(grouped.keys() | reference.keys()):
        mine, theirs = grouped.get(org_id, empty), reference.get(org_id, empty)
        differences.extend(
            OrgDifference(org_id, name, mine[name], theirs[name])
            for name in CHECKED_FIELDS
            if mine[name] != theirs[name]
        )
    return differences
