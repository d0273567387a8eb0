"""Daily session hours as an SVG bar chart: a pure function of the days and their usage."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from xml.sax.saxutils import escape

from babel.numbers import format_decimal

from billing.domain import MS_PER_HOUR, DailyUsage

CHART_TITLE = "Daily session hours"

# The drawing's coordinate system (SVG user units); CSS scales it to the page width.
WIDTH = 720
HEIGHT = 200
LEFT = 44
RIGHT = 8
TOP = 12
BOTTOM = 26
COORDINATE = Decimal("0.01")


def period_days(first_day: date, end_exclusive: date) -> list[date]:
    """Every day from `first_day` up to, not including, `end_exclusive`."""
    return [first_day + timedelta(days=n) for n in range((end_exclusive - first_day).days)]


def daily_hours(
    usage: Iterable[DailyUsage], first_day: date, end_exclusive: date
) -> list[tuple[date, Decimal]]:
    """Session hours per day of the period, days without usage as zero, in day order."""
    milliseconds: dict[date, int] = {}
    for entry in usage:
        milliseconds[entry.day] = milliseconds.get(entry.day, 0) + entry.duration_ms
    return [
        (day, Decimal(milliseconds.get(day, 0)) / MS_PER_HOUR)
        for day in period_days(first_day, end_exclusive)
    ]


def nice_step(peak: Decimal, ticks: int = 4) -> Decimal:
    """A 1, 2 or 5 × 10^k step so that `ticks` steps reach at least `peak`."""
    if peak <= 0:
        return Decimal(1)
    raw = peak / ticks
    magnitude = Decimal(1).scaleb(raw.adjusted())
    for factor in (1, 2, 5, 10):
        step = magnitude * factor
        if step * ticks >= peak:
            return step.normalize()
    return (magnitude * 10).normalize()  # pragma: no cover - the loop always returns


def _coordinate(value: Decimal) -> str:
    return str(value.quantize(COORDINATE, rounding=ROUND_HALF_UP))


def _label(value: Decimal, locale: str) -> str:
    return escape(str(format_decimal(value.normalize(), format="#,##0.##", locale=locale)))


def daily_hours_svg(
    usage: Iterable[DailyUsage], first_day: date, end_exclusive: date, locale: str = "en_US"
) -> str:
    """An SVG bar chart of session hours per UTC day, every day of the period on the axis.

    The only text inside is numbers and the fixed title, so nothing user-controlled lands in it.
    Each bar is a `<rect class="bar">` with `data-day` and `data-hours`, zero days included.
    """
    days = daily_hours(usage, first_day, end_exclusive)
    peak = max((hours for _day, hours in days), default=Decimal(0))
    step = nice_step(peak)
    scale_top = step * 4
    plot_width = Decimal(WIDTH - LEFT - RIGHT)
    plot_height = Decimal(HEIGHT - TOP - BOTTOM)
    baseline = Decimal(TOP) + plot_height
    slot = plot_width / max(len(days), 1)
    bar_width = slot * Decimal("0.68")

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{CHART_TITLE}" '
        # The statement's typeface (a font of its own for the chart's digits cost a subset).
        f'font-family="Inter, DejaVu Sans, sans-serif" font-variant-numeric="tabular-nums">',
        f"<title>{CHART_TITLE}</title>",
    ]
    for tick in range(5):
        value = step * tick
        y = baseline - plot_height * value / scale_top
        stroke = "#9aa3b5" if tick == 0 else "#e3e6ec"
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_coordinate(y)}" '
            f'y2="{_coordinate(y)}" stroke="{stroke}" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="scale" x="{LEFT - 6}" y="{_coordinate(y + 3)}" text-anchor="end" '
            f'font-size="9" fill="#5b6476">{_label(value, locale)} h</text>'
        )
    for index, (day, hours) in enumerate(days):
        x = Decimal(LEFT) + slot * index + (slot - bar_width) / 2
        height = plot_height * hours / scale_top
        parts.append(
            f'<rect class="bar" data-day="{day.isoformat()}" data-hours="{_coordinate(hours)}" '
            f'x="{_coordinate(x)}" y="{_coordinate(baseline - height)}" '
            f'width="{_coordinate(bar_width)}" height="{_coordinate(height)}" fill="#2f5bd3"/>'
        )
        parts.append(
            f'<text class="day" x="{_coordinate(x + bar_width / 2)}" y="{HEIGHT - BOTTOM + 12}" '
            f'text-anchor="middle" font-size="8" fill="#5b6476">{day.day}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
