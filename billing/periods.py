"""Billing periods: UTC calendar months, parsed from "YYYY-MM", with exact bounds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from billing.errors import PeriodError

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True)
class BillingPeriod:
    """One UTC calendar month; `start` inclusive, `end` exclusive."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12 or not 1970 <= self.year <= 9999:
            raise PeriodError(f"period {self.year:04d}-{self.month:02d} is out of range")

    @classmethod
    def parse(cls, text: str) -> BillingPeriod:
        """Parse "2026-10"; anything else raises PeriodError naming the input."""
        match = _PERIOD.match(text.strip())
        if not match:
            raise PeriodError(f"period {text!r} is not of the form YYYY-MM (e.g. 2026-10)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, moment: datetime) -> BillingPeriod:
        """The period a UTC moment falls in."""
        utc = moment.astimezone(UTC)
        return cls(utc.year, utc.month)

    @classmethod
    def previous_to(cls, moment: datetime) -> BillingPeriod:
        """The month before the one a moment falls in: what a monthly close bills."""
        return cls.containing(moment).previous()

    def previous(self) -> BillingPeriod:
        return (
            BillingPeriod(self.year - 1, 12)
            if self.month == 1
            else BillingPeriod(self.year, self.month - 1)
        )

    def next(self) -> BillingPeriod:
        return (
            BillingPeriod(self.year + 1, 1)
            if self.month == 12
            else BillingPeriod(self.year, self.month + 1)
        )

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def start_unix(self) -> int:
        return int(self.start.timestamp())

    @property
    def end_unix(self) -> int:
        return int(self.end.timestamp())

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"
