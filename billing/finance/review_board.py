"""A period's review board: every live invoice beside the previous month, flagged, filtered,
sorted and paged, with the period's totals per currency (summary.csv's)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, text
from sqlmodel import Session, col

from billing.config import Settings
from billing.db.review import held_drafts
from billing.db.tables import Invoice
from billing.domain import OrgTotal
from billing.errors import BillingError
from billing.money import at_minor_units
from billing.periods import BillingPeriod
from billing.statements.reports import OrgChange, org_changes
from billing.states import InvoiceStatus

# summary.pdf's flags as the board names them (CSS classes, query values), and its own.
FLAG_NAMES = {
    "swing": "swing",
    "new": "new",
    "gone": "gone",
    "from zero": "from-zero",
    "currency changed": "currency-changed",
}
FLAGS = ("swing", "new", "gone", "from-zero", "currency-changed", "no-contact", "held")
STATUSES = tuple(state.value for state in InvoiceStatus if state != InvoiceStatus.VOID)
DRAFT = InvoiceStatus.DRAFT.value
SORTS = ("org", "name", "total", "change", "change_percent", "status")


class ReviewQueryError(BillingError):
    """A review filter, sort or page that is not one of the board's (422)."""


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One org on the board: its live invoice (None for an org gone since last month)."""

    invoice_id: int | None
    ref: str | None
    status: str | None
    held: bool
    org_id: str
    org_name: str
    currency: str
    total: Decimal | None
    previous_total: Decimal | None
    previous_currency: str
    change: Decimal | None
    change_percent: Decimal | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class ReviewBoard:
    """One page of the board, how many rows match, the period's totals per currency (the
    live invoices', as summary.csv) and the matching rows' totals per currency."""

    period: str
    previous_period: str
    rows: list[ReviewRow]
    count: int
    page: int
    pages: int
    per_page: int
    totals: dict[str, Decimal]
    filtered_totals: dict[str, Decimal]
    filtered: bool


def _choice(value: str | None, allowed: Sequence[str], label: str) -> str | None:
    if value in (None, ""):
        return None
    if value not in allowed:
        raise ReviewQueryError(f"{label} {value!r} is not one of: {', '.join(allowed)}")
    return value


def _sum(pairs: Iterable[tuple[str, Decimal | None]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for currency, amount in pairs:
        if amount is not None:
            totals[currency] = totals.get(currency, Decimal(0)) + amount
    return {currency: at_minor_units(totals[currency], currency) for currency in sorted(totals)}


Found = tuple[int | None, str | None, str | None, Decimal | None, bool]
NO_INVOICE: Found = (None, None, None, None, False)


def _row(change: OrgChange, invoice: Found | None, held: frozenset[str]) -> ReviewRow:
    invoice_id, number, status, total, no_contact = invoice or NO_INVOICE
    flags: tuple[str, ...] = (FLAG_NAMES[change.flag],) if change.flag else ()
    is_held = status == DRAFT and change.org_id in held
    if no_contact:
        flags += ("no-contact",)
    if is_held:
        flags += ("held",)
    return ReviewRow(
        invoice_id,
        None if invoice_id is None else (number or str(invoice_id)),
        status,
        is_held,
        change.org_id,
        change.org_name,
        change.currency,
        total,
        change.previous,
        change.previous_currency or change.currency,
        change.change,
        change.change_percent,
        flags,
    )


# The board's inputs read raw (no per-value type processing): the period's live invoices and
# the previous period's live totals; org_changes turns them into the board.
CURRENT = text(
    "SELECT org_id, org_name, currency, total, id, number, status, contact_emails = '' "
    "FROM invoice WHERE period = :period AND status <> 'void' ORDER BY id"
)
PREVIOUS = text(
    "SELECT org_id, org_name, currency, total FROM invoice "
    "WHERE period = :period AND status <> 'void' ORDER BY org_id, id"
)
# The boards built lately, by (database, period), each beside the exact inputs it was built
# from: a view whose inputs are equal reuses the rows (memoised, never stale).
_BUILT: OrderedDict[tuple[str, str], tuple[object, Board]] = OrderedDict()
_KEEP = 6
_BUILT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Board:
    """Every row of a period's board, in org order, and its totals per currency."""

    rows: list[ReviewRow]
    totals: dict[str, Decimal]


def _raw_rows(
    connection: Connection, query: TextClause, period: BillingPeriod
) -> list[tuple[Any, ...]]:
    """The query's rows as the driver gives them: plain tuples, compared at C speed."""
    compiled = query.compile(dialect=connection.dialect)
    cursor = connection.connection.cursor()
    try:
        named = compiled.construct_params({"period": str(period)})
        params = tuple(named[name] for name in compiled.positiontup or ())
        cursor.execute(str(compiled), params if compiled.positional else named)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _build(
    current: Sequence[tuple[Any, ...]],
    previous: Sequence[tuple[Any, ...]],
    held: frozenset[str],
    threshold: Decimal,
) -> Board:
    def exact(total: object) -> Decimal:
        return total if isinstance(total, Decimal) else Decimal(str(total))

    invoices: dict[str, Found] = {
        row[0]: (row[4], row[5], row[6], exact(row[3]), bool(row[7])) for row in current
    }
    changes = org_changes(
        [OrgTotal(row[0], row[1], row[2], exact(row[3])) for row in current],
        [OrgTotal(row[0], row[1], row[2], exact(row[3])) for row in previous],
        threshold,
    )
    rows = [_row(change, invoices.get(change.org_id), held) for change in changes]
    return Board(rows, _sum((row.currency, row.total) for row in rows))


def _board(settings: Settings, engine: Engine, period: BillingPeriod) -> Board:
    """Every org of the period and of the previous one, built again only when what it is
    built from differs from the last build's (compared whole, value by value)."""
    with Session(engine) as session:
        connection = session.connection()
        current = _raw_rows(connection, CURRENT, period)
        previous = _raw_rows(connection, PREVIOUS, period.previous())
        held = frozenset(
            org_id for org_id, _reason in held_drafts(session, col(Invoice.period) == str(period))
        )
    inputs = (current, previous, held, settings.report_swing_percent)
    key = (engine.url.render_as_string(), str(period))
    with _BUILT_LOCK:
        built = _BUILT.get(key)
    if built is not None and built[0] == inputs:
        return built[1]
    board = _build(current, previous, held, settings.report_swing_percent)
    with _BUILT_LOCK:
        _BUILT[key] = (inputs, board)
        _BUILT.move_to_end(key)
        while len(_BUILT) > _KEEP:
            _BUILT.popitem(last=False)
    return board


def _at_minor_units(row: ReviewRow) -> ReviewRow:
    """A shown row's amounts at their currency's places (the database may keep more)."""

    def exact(amount: Decimal | None, currency: str) -> Decimal | None:
        return None if amount is None else at_minor_units(amount, currency)

    return replace(
        row,
        total=exact(row.total, row.currency),
        previous_total=exact(row.previous_total, row.previous_currency),
        change=exact(row.change, row.currency),
    )


def _sort_key(sort: str) -> Callable[[ReviewRow], object]:
    keys: dict[str, Callable[[ReviewRow], object]] = {
        "name": lambda row: row.org_name.casefold(),
        "total": lambda row: row.total,
        "change": lambda row: row.change,
        "change_percent": lambda row: row.change_percent,
        "status": lambda row: row.status,
    }
    return keys[sort]


def _sorted(rows: list[ReviewRow], sort: str, descending: bool) -> list[ReviewRow]:
    """Stable: ties in org-id order; rows without the value (a gone org's total) last."""
    rows = sorted(rows, key=lambda row: row.org_id, reverse=descending and sort == "org")
    if sort == "org":
        return rows
    key = _sort_key(sort)
    known = [row for row in rows if key(row) is not None]
    known.sort(key=key, reverse=descending)  # type: ignore[arg-type]
    return known + [row for row in rows if key(row) is None]


def period_review(
    settings: Settings,
    engine: Engine,
    period: BillingPeriod,
    *,
    status: str | None = None,
    flag: str | None = None,
    query: str | None = None,
    sort: str = "org",
    descending: bool = False,
    page: int = 1,
    per_page: int = 100,
) -> ReviewBoard:
    """The board's page `page` (clamped to the last) of the rows matching every filter given:
    status, flag and `query` (a case-insensitive part of the org's id or name)."""
    status = _choice(status, STATUSES, "status")
    flag = _choice(flag, FLAGS, "flag")
    sort = _choice(sort, SORTS, "sort") or "org"
    if page < 1 or per_page < 1:
        raise ReviewQueryError(f"page {page} of {per_page} rows: both must be 1 or more")
    board = _board(settings, engine, period)
    every = board.rows
    needle = (query or "").strip().casefold()
    matching = [
        row
        for row in every
        if (status is None or row.status == status)
        and (flag is None or flag in row.flags)
        and (not needle or needle in row.org_id.casefold() or needle in row.org_name.casefold())
    ]
    filtered = bool(status or flag or needle)
    pages = max(1, -(-len(matching) // per_page))
    page = min(page, pages)
    ordered = _sorted(matching, sort, descending)
    return ReviewBoard(
        period=str(period),
        previous_period=str(period.previous()),
        rows=[_at_minor_units(row) for row in ordered[(page - 1) * per_page : page * per_page]],
        count=len(matching),
        page=page,
        pages=pages,
        per_page=per_page,
        totals=board.totals,
        filtered_totals=(
            _sum((row.currency, row.total) for row in matching) if filtered else board.totals
        ),
        filtered=filtered,
    )
