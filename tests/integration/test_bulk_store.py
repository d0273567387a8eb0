"""Bulk stores: COPY on PostgreSQL and executemany on SQLite keep every value exactly, the
database still guards finalized invoices against bulk loads, and daily usage adds up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session

from billing.db import ledger
from billing.db.bulk import copy_rows, insert_returning_ids
from billing.db.engine import make_engine, upgrade_schema
from billing.db.snapshots import iter_snapshot, store_snapshot_page
from billing.db.tables import BillingRun, Invoice, InvoiceCharge, InvoiceLine
from billing.domain import UsageRecord
from billing.rating import daily_duration

NOW = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
DAY = 86_400
OCTOBER_1 = 1_790_812_800  # 2026-10-01T00:00:00Z
# Text that COPY's text format must escape, and text beyond ASCII.
AWKWARD = [
    "tab\there",
    "new\nline",
    "carriage\r\nreturn",
    "back\\slash",
    "\\N",
    "\\.",
    "ünïcödé ✓ 日本語 🧾",
    "",
    "quote ' \" , ; |",
]
AMOUNTS = [
    Decimal("1234567.123456789012"),
    Decimal("-1234567.123456789012"),
    Decimal("0.000000000001"),
    Decimal("0"),
    Decimal("12345678901234567890123456.5"),  # 26 integer digits: NUMERIC(38, 12)'s widest
    Decimal("7.10"),
]
INVOICE_COLUMNS = ("run_id", "status", "org_id", "org_name", "contact_emails", "period", "currency")
INVOICE_COLUMNS += ("rate_card_id", "rate_card_version", "rate_card_hash", "total", "issued_at")
LINE_COLUMNS = ("invoice_id", "meter", "api_key_id", "user_id", "quantity", "unit", "amount")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def _run(engine: Engine) -> int:
    with Session(engine) as session:
        run = BillingRun(
            period="2026-10", status="succeeded", trigger="test", started_at=NOW, upstream_url="x"
        )
        session.add(run)
        session.commit()
        assert run.id is not None
        return run.id


def _drafts(engine: Engine, run_id: int, *org_ids: str) -> list[int]:
    """Draft invoices of October, one per org, stored with insert_returning_ids."""
    rows = [
        (run_id, "draft", org, f"Org {org}", "", "2026-10", "USD", "c", "1", "h", Decimal(0), NOW)
        for org in org_ids
    ]
    with Session(engine) as session:
        ids = insert_returning_ids(session, Invoice, INVOICE_COLUMNS, rows)
        session.commit()
        stored = {row[0]: row[1] for row in session.execute(text("SELECT id, org_id FROM invoice"))}
    assert [stored[invoice_id] for invoice_id in ids] == list(org_ids)
    return ids


def _finalize(engine: Engine, invoice_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE invoice SET status = 'finalized', number = :number WHERE id = :id"),
            {"number": f"INV-2026-{invoice_id:06d}", "id": invoice_id},
        )


def _lines(engine: Engine, invoice_id: int) -> list[tuple[object, ...]]:
    with Session(engine) as session:
        found = session.execute(
            text(
                "SELECT meter, api_key_id, user_id, quantity, unit, amount FROM invoice_line "
                "WHERE invoice_id = :invoice ORDER BY id"
            ),
            {"invoice": invoice_id},
        )
        return [
            (meter, key, user, Decimal(str(quantity)), unit, Decimal(str(amount)))
            for meter, key, user, quantity, unit, amount in found
        ]


def _awkward_lines() -> list[tuple[str, str | None, str | None, Decimal, str, Decimal]]:
    lines = []
    for number, awkward in enumerate(AWKWARD):
        amount = AMOUNTS[number % len(AMOUNTS)]
        key = None if number % 3 == 0 else awkward
        user = None if number % 2 == 0 else f"user {awkward}"
        lines.append((f"meter {awkward}", key, user, -amount, awkward[:20], amount))
    return lines


def test_copy_stores_exactly_what_a_plain_insert_stores(engine: Engine) -> None:
    copied, inserted = _drafts(engine, _run(engine), "org-copy", "org-insert")
    lines = _awkward_lines()
    with Session(engine) as session:
        copy_rows(session, InvoiceLine, LINE_COLUMNS, [(copied, *line) for line in lines])
        session.execute(
            insert(InvoiceLine.__table__),  # type: ignore[attr-defined]
            [dict(zip(LINE_COLUMNS, (inserted, *line), strict=True)) for line in lines],
        )
        session.commit()
    assert _lines(engine, copied) == lines
    assert _lines(engine, inserted) == lines
    with Session(engine) as session:
        stored = session.execute(
            text("SELECT amount FROM invoice_line WHERE invoice_id = :i ORDER BY id"),
            {"i": copied},
        ).scalars()
        assert [format(Decimal(str(amount)), "f") for amount in stored][:2] == [
            "1234567.123456789012",
            "-1234567.123456789012",
        ]


def test_copy_refuses_floats_for_money_like_every_other_insert(engine: Engine) -> None:
    (invoice,) = _drafts(engine, _run(engine), "org-1")
    row = (invoice, "duration", None, None, Decimal(1), "hour", 0.1)  # float-ok: must be refused
    with Session(engine) as session, pytest.raises((TypeError, StatementError), match="Decimal"):
        copy_rows(session, InvoiceLine, LINE_COLUMNS, [row])


def test_snapshot_pages_come_back_as_they_were_stored(engine: Engine) -> None:
    run_id = _run(engine)
    records = [
        UsageRecord(
            bucket_start=OCTOBER_1 + number * 3_600,
            bucket_end=OCTOBER_1 + (number + 1) * 3_600,
            org_id=f"org {awkward}",
            api_key_id=None if number % 3 == 0 else awkward,
            user_id=None if number % 2 == 0 else f"user {awkward}",
            duration_ms=number * 1_000_003,
            reserved_memory_mib=None if number % 2 else 2**40 + number,
            peak_memory_mib=None if number % 2 else AMOUNTS[number % len(AMOUNTS)].copy_abs(),
            workspace_bytes_in=2**53 + number,
            workspace_bytes_out=number,
            num_sessions=number,
            request_count=number + 1,
            num_operations=number + 2,
            files_changed_count=number + 3,
            oom_killed_count=number % 2,
            session_kind=None if number % 2 else awkward[:32],
        )
        for number, awkward in enumerate(AWKWARD)
    ]
    with Session(engine) as session, session.begin():
        store_snapshot_page(session, run_id, 1, records[:4])
    with Session(engine) as session, session.begin():
        store_snapshot_page(session, run_id, 2, records[4:])
        store_snapshot_page(session, run_id, 3, [])
    with Session(engine) as session:
        assert list(iter_snapshot(session, run_id, batch=3)) == records
        pages = session.execute(
            text("SELECT page, count(*) FROM usage_snapshot GROUP BY page ORDER BY page")
        ).all()
    assert [tuple(page) for page in pages] == [(1, 4), (2, len(records) - 4)]


def test_the_guard_refuses_bulk_loads_under_a_finalized_invoice(engine: Engine) -> None:
    draft, final = _drafts(engine, _run(engine), "org-draft", "org-final")
    line = ("duration", "key", None, Decimal("1.5"), "hour", Decimal("0.15"))
    with Session(engine) as session:
        copy_rows(session, InvoiceLine, LINE_COLUMNS, [(final, *line)])
        session.commit()  # allowed while a draft
    _finalize(engine, final)
    before = _lines(engine, final)

    with Session(engine) as session, pytest.raises(IntegrityError, match="finalized"):
        copy_rows(session, InvoiceLine, LINE_COLUMNS, [(draft, *line), (final, *line)])
    charge = ("duration", "Session time", "hour", Decimal(1), Decimal(0), Decimal(1), "x")
    charge_columns = ("invoice_id", "position", "meter", "description", "unit", "quantity")
    charge_columns += ("included", "billable", "pricing", "amount")
    with Session(engine) as session, pytest.raises(IntegrityError, match="finalized"):
        copy_rows(
            session,
            InvoiceCharge,
            charge_columns,
            [(draft, 0, *charge, Decimal(1)), (final, 0, *charge, Decimal(1))],
        )

    with Session(engine) as session:
        copy_rows(session, InvoiceLine, LINE_COLUMNS, [(draft, *line), (draft, *line)])
        session.commit()
    forbidden = [
        "INSERT INTO invoice_line (invoice_id, meter, quantity, unit, amount) VALUES "
        "(:draft, 'duration', '1', 'hour', '1'), (:final, 'duration', '1', 'hour', '1')",
        "UPDATE invoice_line SET invoice_id = :final WHERE invoice_id = :draft",
        "UPDATE invoice_line SET invoice_id = :draft WHERE invoice_id = :final",
        "DELETE FROM invoice_line WHERE invoice_id IN (:draft, :final)",
    ]
    for statement in forbidden:
        with pytest.raises(IntegrityError, match="finalized"), engine.begin() as connection:
            connection.execute(text(statement), {"draft": draft, "final": final})
    assert _lines(engine, final) == before
    assert len(_lines(engine, draft)) == 2
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM invoice_line WHERE invoice_id = :d"), {"d": draft})
    assert _lines(engine, draft) == []


def test_daily_usage_sums_each_orgs_results_per_utc_day_of_the_bucket_start() -> None:
    def usage(bucket_start: int, duration_ms: int, user: str | None) -> UsageRecord:
        return UsageRecord(bucket_start, bucket_start + 3_600, "org-a", "key", user, duration_ms)

    records = [
        usage(OCTOBER_1 + 5 * DAY + 7, 8_000, "user-2"),
        usage(OCTOBER_1, 1_000, None),
        usage(OCTOBER_1 + DAY - 3_600, 2_000, "user-1"),  # the day's last hour
        usage(OCTOBER_1 + DAY, 4_000, "user-1"),  # the next day
        usage(OCTOBER_1 + 2 * DAY, 0, None),  # a day with results but no session time
    ]
    assert daily_duration(records) == (
        (OCTOBER_1, 3_000),
        (OCTOBER_1 + DAY, 4_000),
        (OCTOBER_1 + 2 * DAY, 0),
        (OCTOBER_1 + 5 * DAY, 8_000),
    )
    assert daily_duration([]) == ()


def test_deleting_drafts_in_chunks_removes_them_whole_and_nothing_else(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    orgs = [f"org-{number}" for number in range(5)]
    *drafts, final = _drafts(engine, _run(engine), *orgs, "org-final")
    line = ("duration", "key", "user", Decimal("1.5"), "hour", Decimal("0.15"))
    with Session(engine) as session:
        copy_rows(session, InvoiceLine, LINE_COLUMNS, [(i, *line) for i in (*drafts, final)])
        session.commit()
    _finalize(engine, final)
    monkeypatch.setattr(ledger, "_IDS_PER_STATEMENT", 2)
    with Session(engine) as session:
        ledger.delete_drafts(session, [*drafts, None])
        session.commit()
    with Session(engine) as session:
        left = session.execute(text("SELECT id FROM invoice")).scalars().all()
    assert left == [final]
    assert all(_lines(engine, draft) == [] for draft in drafts)
    assert _lines(engine, final) == [line]
