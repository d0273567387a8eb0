"""The period run report (summary.pdf): its data tallied one statement at a time in bounded
memory, an inline SVG chart, and its PDF."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from pathlib import Path
from typing import Generic, TypeVar

from babel.numbers import format_decimal
from markupsafe import Markup

from billing.domain import OrgTotal, Statement
from billing.errors import OutputError
from billing.statements import formatting
from billing.statements.pdf import (
    SHIPPED_TEMPLATES,
    _font_configuration,
    asset_fetcher,
    template_environment,
)

NEW, GONE, SWING, FROM_ZERO, CURRENCY_CHANGED = (
    "new",
    "gone",
    "swing",
    "from zero",
    "currency changed",
)

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the run behind a period's invoices noticed; None where it is not recorded (yet)."""

    run_id: int | None
    trigger: str
    status: str
    pages_fetched: int
    usage_results: int
    results_without_memory: int
    results_with_peak_only: int | None
    duplicate_results: int | None
    completeness: str | None


@dataclass(frozen=True, slots=True)
class OrgChange:
    """One org's invoice total against the previous period's."""

    org_id: str
    org_name: str
    currency: str
    previous: Decimal | None
    current: Decimal | None
    change: Decimal | None
    change_percent: Decimal | None
    flag: str
    previous_currency: str | None = None  # set when the previous total is in another currency


@dataclass(frozen=True, slots=True)
class MeterTotal:
    """The sum of one meter's charges over all invoices of a currency."""

    currency: str
    meter: str
    description: str
    amount: Decimal
    invoices: int


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """The period's total in one currency."""

    currency: str
    total: Decimal
    invoices: int


@dataclass(frozen=True, slots=True)
class CentreTotal:
    """A cost centre's total in one currency."""

    currency: str
    cost_centre: str
    total: Decimal


@dataclass(frozen=True, slots=True)
class OrgRow:
    """One invoice as the report's per-org tables show it: a few facts, not the statement."""

    org_id: str
    org_name: str
    invoice_number: str
    rate_card_id: str
    rate_card_version: str
    currency: str
    total: Decimal


def org_row(statement: Statement) -> OrgRow:
    return OrgRow(
        statement.org_id,
        statement.org_name,
        statement.invoice_number,
        statement.rate_card_id,
        statement.rate_card_version,
        statement.currency,
        statement.total,
    )


def org_total(statement: Statement) -> OrgTotal:
    return OrgTotal(statement.org_id, statement.org_name, statement.currency, statement.total)


@dataclass(frozen=True)
class PeriodReport:
    """Everything summary.pdf shows, as plain data built by the service layer.

    The per-org tables hold at most the report's bound of rows; `invoice_count`,
    `change_count` and `without_contact_count` say how many there are in all (summary.csv and
    changes.csv have every org).
    """

    period: str
    previous_period: str
    issuer_name: str
    org_rows: tuple[OrgRow, ...]
    invoice_count: int
    currency_totals: tuple[CurrencyTotal, ...]
    meter_totals: tuple[MeterTotal, ...]
    changes: tuple[OrgChange, ...]
    change_count: int
    flagged_count: int
    swing_threshold_percent: Decimal
    orgs_without_contact: tuple[OrgRow, ...]
    without_contact_count: int
    centre_totals: tuple[CentreTotal, ...]
    run: RunFacts | None
    warnings: tuple[str, ...]
    chart_rows: tuple[OrgRow, ...] = ()
    top_orgs: int = 10

    @property
    def statements(self) -> tuple[OrgRow, ...]:
        """The org rows, under the name report.html overrides written before the bound use."""
        return self.org_rows

    @property
    def flagged(self) -> tuple[OrgChange, ...]:
        return tuple(change for change in self.changes if change.flag)


def _percent(change: Decimal, previous: Decimal) -> Decimal:
    return (change / previous * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def org_changes(
    current: Iterable[OrgTotal], previous: Iterable[OrgTotal], threshold_percent: Decimal
) -> Iterator[OrgChange]:
    """Per org, in org order: this period's total against the previous one, flagged when new,
    gone, or the change is larger than `threshold_percent` (in either direction)."""
    now = {total.org_id: total for total in current}
    before = {total.org_id: total for total in previous}
    for org_id in sorted(now.keys() | before.keys()):
        this, last = now.get(org_id), before.get(org_id)
        if last is None:
            assert this is not None
            yield OrgChange(org_id, this.org_name, this.currency, None, this.total, None, None, NEW)
        elif this is None:
            yield OrgChange(
                org_id, last.org_name, last.currency, last.total, None, None, None, GONE
            )
        elif this.currency != last.currency:
            yield OrgChange(
                org_id,
                this.org_name,
                this.currency,
                last.total,
                this.total,
                None,
                None,
                CURRENCY_CHANGED,
                last.currency,
            )
        else:
            change = this.total - last.total
            percent: Decimal | None = None
            if last.total == 0:
                flag = FROM_ZERO if change else ""
            else:
                flag = SWING if abs(change / last.total * 100) > threshold_percent else ""
                percent = _percent(change, last.total)
            yield OrgChange(
                org_id, this.org_name, this.currency, last.total, this.total, change, percent, flag
            )


def month_over_month(
    current: Sequence[Statement], previous: Sequence[Statement], threshold_percent: Decimal
) -> tuple[OrgChange, ...]:
    """`org_changes` of two periods' statements."""
    return tuple(org_changes(map(org_total, current), map(org_total, previous), threshold_percent))


class Leading(Generic[Item]):
    """The first `limit` of the items added, ordered by `key`, in memory bounded by the limit
    (None keeps every item); `count` is how many were added."""

    def __init__(self, limit: int | None, key: Callable[[Item], tuple[object, ...]]) -> None:
        self._limit = limit
        self._key = key
        self._items: list[Item] = []
        self.count = 0

    def add(self, item: Item) -> None:
        self.count += 1
        self._items.append(item)
        if self._limit is not None and len(self._items) >= 2 * self._limit + 32:
            self._trim()

    def _trim(self) -> None:
        self._items.sort(key=self._key)
        if self._limit is not None:
            del self._items[self._limit :]

    def items(self) -> list[Item]:
        """The kept items, in `key` order."""
        self._trim()
        return list(self._items)


def _largest_first(row: OrgRow) -> tuple[object, ...]:
    return (-row.total, row.org_id)


def _change_size(change: OrgChange) -> Decimal:
    if change.change is not None:
        return abs(change.change)
    return max(abs(change.previous or Decimal(0)), abs(change.current or Decimal(0)))


def _change_priority(change: OrgChange) -> tuple[object, ...]:
    """Flagged changes first, then by size of change (amounts compared as numbers)."""
    return (not change.flag, -_change_size(change), change.org_id)


def _shared_out(ranked: dict[str, list[OrgRow]], limit: int) -> tuple[OrgRow, ...]:
    """At most `limit` rows taken rank by rank across currencies (amounts in different
    currencies are not comparable), shown by currency, largest first."""
    candidates = [
        (rank, currency, row) for currency, rows in ranked.items() for rank, row in enumerate(rows)
    ]
    candidates.sort(key=lambda candidate: (candidate[0], candidate[1]))
    chosen = [row for _rank, _currency, row in candidates[:limit]]
    return tuple(sorted(chosen, key=lambda row: (row.currency, -row.total, row.org_id)))


class ChangeSelection:
    """The month-over-month rows summary.pdf shows: every org while they fit the bound (in org
    order), else flagged changes first, by size of change, up to the bound."""

    def __init__(self, bound: int | None) -> None:
        self._bound = bound
        self._kept: Leading[OrgChange] = Leading(bound, _change_priority)
        self.flagged = 0

    @property
    def count(self) -> int:
        return self._kept.count

    def add(self, change: OrgChange) -> None:
        self._kept.add(change)
        self.flagged += bool(change.flag)

    def rows(self) -> tuple[OrgChange, ...]:
        kept = self._kept.items()
        if self._bound is None or self.count <= self._bound:
            kept.sort(key=lambda change: change.org_id)
        return tuple(kept)


class ReportTally:
    """What summary.pdf needs of a period, gathered one statement at a time: totals by
    currency and meter, and per currency the largest invoices with and without a billing
    contact, never more than `max_org_rows` (or `top_orgs`) of each (None: every invoice)."""

    def __init__(self, max_org_rows: int | None, top_orgs: int) -> None:
        self._bound = max_org_rows
        self._top_orgs = top_orgs
        self._keep = None if max_org_rows is None else max(max_org_rows, top_orgs)
        self._largest: dict[str, Leading[OrgRow]] = {}
        self._without_contact: dict[str, Leading[OrgRow]] = {}
        self._currencies: dict[str, tuple[Decimal, int]] = {}
        # (currency, meter) -> (description, org whose description it is, amount, charges)
        self._meters: dict[tuple[str, str], tuple[str, str, Decimal, int]] = {}

    def add(self, statement: Statement) -> None:
        row = org_row(statement)
        currency = row.currency
        total, count = self._currencies.get(currency, (Decimal(0), 0))
        self._currencies[currency] = (total + row.total, count + 1)
        for charge in statement.charges:
            meter, label = charge.meter, charge.description
            if charge.is_correction:
                meter, label = f"{meter}:correction", f"Corrections: {label}"
            elif charge.charge_class == "adjustment":  # one row, not one per adjustment
                meter, label = "adjustment", "Adjustments"
            elif charge.is_tax:  # one row per rate, apart from any meter of the same name
                meter, label = f"tax:{meter}", f"Tax: {label}"
            elif charge.charge_class == "credit":  # applied and carried apart, never summed
                meter = "credit_applied" if charge.amount < 0 else "credit_carried"
            key = (currency, meter)
            description, owner, amount, charges = self._meters.get(
                key, (label, row.org_id, Decimal(0), 0)
            )
            if row.org_id < owner:  # the first org's description, whatever the order
                description, owner = label, row.org_id
            self._meters[key] = (description, owner, amount + charge.amount, charges + 1)
        self._largest.setdefault(currency, Leading(self._keep, _largest_first)).add(row)
        if not statement.emails:
            self._without_contact.setdefault(currency, Leading(self._bound, _largest_first)).add(
                row
            )

    @property
    def invoice_count(self) -> int:
        return sum(count for _total, count in self._currencies.values())

    @property
    def without_contact_count(self) -> int:
        return sum(kept.count for kept in self._without_contact.values())

    def _bounded(self, kept: dict[str, Leading[OrgRow]], count: int) -> tuple[OrgRow, ...]:
        ranked = {currency: kept[currency].items() for currency in sorted(kept)}
        if self._bound is None or count <= self._bound:
            every = (row for rows in ranked.values() for row in rows)
            return tuple(sorted(every, key=lambda row: row.org_id))
        return _shared_out(ranked, self._bound)

    def report(
        self,
        period: str,
        previous_period: str,
        changes: ChangeSelection,
        run: RunFacts | None,
        centre_totals: Sequence[CentreTotal],
        *,
        issuer_name: str,
        swing_threshold_percent: Decimal,
    ) -> PeriodReport:
        """The report of what was added, with the month-over-month rows and cost centres."""
        without_contact = self.without_contact_count
        return PeriodReport(
            period=period,
            previous_period=previous_period,
            issuer_name=issuer_name,
            org_rows=self._bounded(self._largest, self.invoice_count),
            invoice_count=self.invoice_count,
            currency_totals=tuple(
                CurrencyTotal(currency, total, count)
                for currency, (total, count) in sorted(self._currencies.items())
            ),
            meter_totals=tuple(
                MeterTotal(currency, meter, description, amount, count)
                for (currency, meter), (description, _owner, amount, count) in sorted(
                    self._meters.items()
                )
            ),
            changes=changes.rows(),
            change_count=changes.count,
            flagged_count=changes.flagged,
            swing_threshold_percent=swing_threshold_percent,
            orgs_without_contact=self._bounded(self._without_contact, without_contact),
            without_contact_count=without_contact,
            centre_totals=tuple(centre_totals),
            run=run,
            warnings=run_warnings(period, run, without_contact),
            chart_rows=tuple(
                row
                for currency in sorted(self._largest)
                for row in self._largest[currency].items()[: self._top_orgs]
            ),
            top_orgs=self._top_orgs,
        )


def run_warnings(period: str, run: RunFacts | None, without_contact: int) -> tuple[str, ...]:
    """The lines finance should read before sending anything on."""
    warnings = []
    if run is None:
        warnings.append("No run is recorded for these invoices.")
        return tuple(warnings)
    if run.results_without_memory:
        warnings.append(
            f"{run.results_without_memory} usage results had neither reserved nor peak memory; "
            "their memory was billed as 0."
        )
    if run.results_with_peak_only:
        warnings.append(
            f"{run.results_with_peak_only} usage results had only peak memory; "
            "it was billed in place of the reservation."
        )
    if run.duplicate_results is None:
        warnings.append(
            "Duplicate results: not known until the run finishes; "
            f"billing statements render --period {period} adds the count."
        )
    elif run.duplicate_results:
        warnings.append(
            f"{run.duplicate_results} duplicated usage results were dropped (exact replays)."
        )
    if run.completeness in (None, "skipped"):
        warnings.append(
            "The completeness check was not run: the grouped usage was not compared "
            "with the per-org totals."
        )
    elif run.completeness != "passed":
        warnings.append(f"Completeness check: {run.completeness}.")
    if without_contact:
        warnings.append(f"{without_contact} orgs have no billing contact and get no email.")
    return tuple(warnings)


def build_period_report(
    period: str,
    previous_period: str,
    statements: Sequence[Statement],
    previous: Sequence[Statement],
    run: RunFacts | None,
    centre_totals: Sequence[CentreTotal],
    *,
    issuer_name: str,
    swing_threshold_percent: Decimal,
    top_orgs: int = 10,
    max_org_rows: int | None = None,
) -> PeriodReport:
    """The report of a period from its statements and the previous period's (all in memory;
    `billing.statements.period_reports` streams them instead)."""
    tally = ReportTally(max_org_rows, top_orgs)
    for statement in statements:
        tally.add(statement)
    changes = ChangeSelection(max_org_rows)
    for change in month_over_month(statements, previous, swing_threshold_percent):
        changes.add(change)
    return tally.report(
        period,
        previous_period,
        changes,
        run,
        centre_totals,
        issuer_name=issuer_name,
        swing_threshold_percent=swing_threshold_percent,
    )


_BAR_HEIGHT = 16
_GAP = 6
_LABEL_WIDTH = 190
_VALUE_WIDTH = 110
_CHART_WIDTH = 640


def bar_chart_svg(bars: Sequence[tuple[str, Decimal, str]]) -> Markup:
    """A horizontal bar chart as inline SVG: (label, value, value text) per bar, largest first.

    Labels are XML-escaped here; the geometry uses one decimal so the output is deterministic.
    """
    height = len(bars) * (_BAR_HEIGHT + _GAP) + _GAP
    largest = max((value for _label, value, _text in bars), default=Decimal(0))
    room = Decimal(_CHART_WIDTH - _LABEL_WIDTH - _VALUE_WIDTH)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{_CHART_WIDTH}" '
        f'height="{height}" viewBox="0 0 {_CHART_WIDTH} {height}" role="img">'
    ]
    for index, (label, value, text) in enumerate(bars):
        top = _GAP + index * (_BAR_HEIGHT + _GAP)
        width = (room * value / largest) if largest > 0 and value > 0 else Decimal(0)
        width = width.quantize(Decimal("0.1"))
        width_text = format(width, "f")
        middle = top + _BAR_HEIGHT - 4
        short = label if len(label) <= 30 else label[:29] + "…"
        parts.append(
            f'<text x="{_LABEL_WIDTH - 6}" y="{middle}" text-anchor="end" '
            f'font-size="9">{escape(short)}</text>'
            f'<rect x="{_LABEL_WIDTH}" y="{top}" width="{width_text}" height="{_BAR_HEIGHT}" '
            f'fill="#1d4ed8"/>'
            f'<text x="{format(_LABEL_WIDTH + width + 4, "f")}" y="{middle}" '
            f'font-size="9">{escape(text)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text node above is escaped


def top_org_charts(report: PeriodReport, locale: str) -> list[tuple[str, Markup]]:
    """One chart per currency of the largest invoices (amounts in different currencies are
    not comparable)."""
    charts = []
    for currency_total in report.currency_totals:
        ranked = sorted(
            (row for row in report.chart_rows if row.currency == currency_total.currency),
            key=_largest_first,
        )[: report.top_orgs]
        bars = [
            (
                s.org_name or s.org_id,
                s.total,
                formatting.money(s.total, s.currency, locale),
            )
            for s in ranked
        ]
        charts.append((currency_total.currency, bar_chart_svg(bars)))
    return charts


def report_html(report: PeriodReport, override_dir: Path | None, locale: str) -> str:
    """The report page as autoescaped HTML from report.html (overridable like statements)."""
    environment = template_environment(override_dir, locale)
    template = environment.get_template("report.html")
    return template.render(
        r=report,
        charts=top_org_charts(report, locale),
        centre_rows=report.centre_totals,
        zero=Decimal(0),
        number=lambda count: format_decimal(count, locale=locale),
    )


def report_pdf(report: PeriodReport, override_dir: Path | None, locale: str) -> bytes:
    """summary.pdf: rendered with the assets-only fetcher, like the statements."""
    from weasyprint import HTML

    roots = [SHIPPED_TEMPLATES / "assets"]
    if override_dir:
        roots.insert(0, override_dir / "assets")
    base_url = (override_dir or SHIPPED_TEMPLATES).resolve().as_uri() + "/"
    try:
        document = HTML(
            string=report_html(report, override_dir, locale),
            base_url=base_url,
            url_fetcher=asset_fetcher(roots),
        )
        pdf: bytes = document.write_pdf(font_config=_font_configuration())
    except OSError as error:
        raise OutputError(f"period {report.period}: report rendering failed: {error}") from None
    return pdf
