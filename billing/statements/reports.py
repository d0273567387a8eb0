"""The period run report (summary.pdf): plain report data, an inline SVG chart, and its PDF."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from pathlib import Path

from markupsafe import Markup

from billing.domain import Statement
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


@dataclass(frozen=True)
class PeriodReport:
    """Everything summary.pdf shows, as plain data built by the service layer."""

    period: str
    previous_period: str
    issuer_name: str
    statements: tuple[Statement, ...]
    currency_totals: tuple[CurrencyTotal, ...]
    meter_totals: tuple[MeterTotal, ...]
    changes: tuple[OrgChange, ...]
    swing_threshold_percent: Decimal
    orgs_without_contact: tuple[Statement, ...]
    centre_totals: tuple[CentreTotal, ...]
    run: RunFacts | None
    warnings: tuple[str, ...]
    top_orgs: int = 10

    @property
    def flagged(self) -> tuple[OrgChange, ...]:
        return tuple(change for change in self.changes if change.flag)


def _percent(change: Decimal, previous: Decimal) -> Decimal:
    return (change / previous * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


def month_over_month(
    current: Sequence[Statement], previous: Sequence[Statement], threshold_percent: Decimal
) -> tuple[OrgChange, ...]:
    """Per org: this period's total against the previous one, flagged when new, gone, or the
    change is larger than `threshold_percent` (in either direction)."""
    now = {statement.org_id: statement for statement in current}
    before = {statement.org_id: statement for statement in previous}
    changes = []
    for org_id in sorted(now.keys() | before.keys()):
        this, last = now.get(org_id), before.get(org_id)
        shown = this or last
        assert shown is not None
        if last is None:
            changes.append(
                OrgChange(
                    org_id, shown.org_name, shown.currency, None, shown.total, None, None, NEW
                )
            )
            continue
        if this is None:
            changes.append(
                OrgChange(
                    org_id, shown.org_name, shown.currency, last.total, None, None, None, GONE
                )
            )
            continue
        if this.currency != last.currency:
            changes.append(
                OrgChange(
                    org_id,
                    this.org_name,
                    this.currency,
                    last.total,
                    this.total,
                    None,
                    None,
                    CURRENCY_CHANGED,
                )
            )
            continue
        change = this.total - last.total
        if last.total == 0:
            flag = FROM_ZERO if change else ""
            percent = None
        else:
            exact = abs(change / last.total * 100)
            flag = SWING if exact > threshold_percent else ""
            percent = _percent(change, last.total)
        changes.append(
            OrgChange(
                org_id, this.org_name, this.currency, last.total, this.total, change, percent, flag
            )
        )
    return tuple(changes)


def currency_totals(statements: Sequence[Statement]) -> tuple[CurrencyTotal, ...]:
    totals: dict[str, tuple[Decimal, int]] = {}
    for statement in statements:
        total, count = totals.get(statement.currency, (Decimal(0), 0))
        totals[statement.currency] = (total + statement.total, count + 1)
    return tuple(
        CurrencyTotal(currency, total, count) for currency, (total, count) in sorted(totals.items())
    )


def meter_totals(statements: Sequence[Statement]) -> tuple[MeterTotal, ...]:
    """Charges summed per currency and meter; the charges of an invoice sum to its total."""
    totals: dict[tuple[str, str], tuple[str, Decimal, int]] = {}
    for statement in statements:
        for charge in statement.charges:
            meter, label = charge.meter, charge.description
            if charge.is_correction:
                meter, label = f"{meter}:correction", f"Corrections: {label}"
            key = (statement.currency, meter)
            description, amount, count = totals.get(key, (label, Decimal(0), 0))
            totals[key] = (description, amount + charge.amount, count + 1)
    return tuple(
        MeterTotal(currency, meter, description, amount, count)
        for (currency, meter), (description, amount, count) in sorted(totals.items())
    )


def run_warnings(
    period: str, run: RunFacts | None, statements: Sequence[Statement]
) -> tuple[str, ...]:
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
    without_contact = sum(1 for statement in statements if not statement.emails)
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
) -> PeriodReport:
    """The report of a period from its stored statements and the previous period's."""
    ordered = tuple(sorted(statements, key=lambda statement: statement.org_id))
    return PeriodReport(
        period=period,
        previous_period=previous_period,
        issuer_name=issuer_name,
        statements=ordered,
        currency_totals=currency_totals(ordered),
        meter_totals=meter_totals(ordered),
        changes=month_over_month(ordered, previous, swing_threshold_percent),
        swing_threshold_percent=swing_threshold_percent,
        orgs_without_contact=tuple(s for s in ordered if not s.emails),
        centre_totals=tuple(centre_totals),
        run=run,
        warnings=run_warnings(period, run, ordered),
        top_orgs=top_orgs,
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
            (s for s in report.statements if s.currency == currency_total.currency),
            key=lambda statement: (-statement.total, statement.org_id),
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
