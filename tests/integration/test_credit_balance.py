"""Credit balances: a negative total is carried to the org's balance and a later invoice uses it
to the cent; grants are used oldest first, expired ones skipped and their expiry recorded;
currencies are kept apart; a void gives back the credit it used and cannot withdraw credit a
later invoice used; PDF, CSV, summary, allocation and database agree."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from billing.cli.app import app
from billing.close.inline import close_period, finalize_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.errors import BillingError, InvoiceStateError
from billing.finance.credits import PENDING_EXPIRY, grant, show
from billing.finance.invoices import void
from billing.periods import BillingPeriod
from billing.statements.formatting import money
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, rows
from tests.support.agreement import pdf_text as printed_text

OCTOBER = BillingPeriod.parse("2026-10")
NOVEMBER = BillingPeriod.parse("2026-11")
DECEMBER = BillingPeriod.parse("2026-12")
DRAFT = CloseOptions(draft=True)
DAY = 86_400


def after(period: BillingPeriod) -> Callable[[], datetime]:
    """A clock past the end of `period` (a month is closed once it has ended)."""
    return lambda: max(datetime.now(UTC), period.end + timedelta(hours=1))


@contextmanager
def upstream(
    make_settings: Callable[..., Settings],
    database_url: str,
    *,
    reported_until: int | None = None,
    orgs: int = 3,
) -> Iterator[Settings]:
    """Settings against an emulator that holds back the days from `reported_until` on."""
    with running_emulator(
        orgs=orgs, seed=11, page_size=200, reported_until=reported_until
    ) as base_url:
        yield make_settings(
            database_url=database_url, mka1_base_url=base_url, mka1_api_key=SecretStr("t")
        )


def balances(database_url: str) -> dict[tuple[str, str], Decimal]:
    """(org, currency) -> the sum of the entries, added here (never SQLite's float SUM)."""
    summed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for org, currency, amount in rows(
        database_url, "SELECT org_id, currency, amount FROM credit_entry"
    ):
        summed[(str(org), str(currency))] += Decimal(str(amount))
    return dict(summed)


def live_invoice(database_url: str, org: str, period: BillingPeriod) -> tuple[int, str, Decimal]:
    """The org's live invoice of the period: id, number, total."""
    ((invoice_id, number, total),) = rows(
        database_url,
        "SELECT id, number, total FROM invoice WHERE status <> 'void' "  # noqa: S608
        f"AND org_id = '{org}' AND period = '{period}'",
    )
    assert isinstance(invoice_id, int)
    return invoice_id, str(number), Decimal(str(total))


def charges_of(database_url: str, invoice_id: int) -> list[tuple[str, str, Decimal]]:
    """(class, description, amount) of an invoice's charges, in order."""
    return [
        (str(charge_class), str(description), Decimal(str(amount)))
        for charge_class, description, amount in rows(
            database_url,
            "SELECT charge_class, description, amount FROM invoice_charge "  # noqa: S608
            f"WHERE invoice_id = {invoice_id} ORDER BY position",
        )
    ]


def before_credit(charges: list[tuple[str, str, Decimal]]) -> Decimal:
    """What an invoice's charges come to before its credit charge."""
    return sum((amount for cls, _d, amount in charges if cls != "credit"), Decimal(0))


def credit_of(charges: list[tuple[str, str, Decimal]]) -> list[tuple[str, Decimal]]:
    return [(description, amount) for cls, description, amount in charges if cls == "credit"]


def entries_of(database_url: str, org: str) -> list[tuple[object, ...]]:
    """(id, kind, currency, amount, grant_id, invoice_id) of the org's entries, in order."""
    return [
        (entry_id, kind, currency, Decimal(str(amount)), grant_id, invoice_id)
        for entry_id, kind, currency, amount, grant_id, invoice_id in rows(
            database_url,
            "SELECT id, kind, currency, amount, grant_id, invoice_id FROM credit_entry "  # noqa: S608
            f"WHERE org_id = '{org}' ORDER BY id",
        )
    ]


def pdf_text(path: Path) -> str:
    return printed_text(path).replace("\xa0", " ")


def carried_balances(
    make_settings: Callable[..., Settings], database_url: str
) -> dict[str, Decimal]:
    """October is billed in full; late news lowers it (a re-close whose upstream reports only
    its first five days: negative corrections for November); November has one day of usage,
    so its invoices would be negative: they are finalized at 0 with `Carried to credit
    balance`, and the excess is granted to the org. Returns org -> the amount carried."""
    with upstream(make_settings, database_url) as settings:
        close_period(settings, OCTOBER)
    with upstream(
        make_settings, database_url, reported_until=OCTOBER.start_unix + 5 * DAY
    ) as settings:
        lowered = close_period(settings, OCTOBER)
    assert {o["action"] for o in lowered.org_outcomes} == {"corrected"}
    with upstream(
        make_settings, database_url, reported_until=NOVEMBER.start_unix + DAY
    ) as settings:
        november = close_period(settings, NOVEMBER, now=after(NOVEMBER))
    assert_period_agrees(database_url, november.folder, str(NOVEMBER))
    carried: dict[str, Decimal] = {}
    for statement in november.statements:
        invoice_id, _number, total = live_invoice(database_url, statement.org_id, NOVEMBER)
        charges = charges_of(database_url, invoice_id)
        due = before_credit(charges)
        if due < 0:
            assert credit_of(charges) == [("Carried to credit balance", -due)]
            assert total == 0
            carried[statement.org_id] = -due
            ((grant_amount, grant_invoice),) = rows(
                database_url,
                "SELECT amount, invoice_id FROM credit_entry WHERE kind = 'grant' "  # noqa: S608
                f"AND org_id = '{statement.org_id}'",
            )
            assert (Decimal(str(grant_amount)), grant_invoice) == (-due, invoice_id)
        else:
            assert credit_of(charges) == []
            assert total == due
    assert carried, "the lowered October must leave some November invoice negative"
    return carried


def test_a_decrease_larger_than_the_next_invoice_is_carried_and_used_to_the_cent(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    carried = carried_balances(make_settings, database_url)
    assert {org: amount for (org, _c), amount in balances(database_url).items()} == carried

    with upstream(make_settings, database_url) as settings:
        december = close_period(settings, DECEMBER, now=after(DECEMBER))
    totals = assert_period_agrees(database_url, december.folder, str(DECEMBER))
    left = balances(database_url)
    for statement in december.statements:
        org = statement.org_id
        invoice_id, number, total = live_invoice(database_url, org, DECEMBER)
        charges = charges_of(database_url, invoice_id)
        due = before_credit(charges)
        if org not in carried:
            assert credit_of(charges) == []
            continue
        applied = min(carried[org], due)
        assert credit_of(charges) == [("Credit applied", -applied)]
        assert total == totals[org] == due - applied
        assert left[(org, statement.currency)] == carried[org] - applied
        # the usage charges are untouched: the credit is one more charge, one org-level line
        assert [c for c in statement.charges if c.charge_class == "credit"] == [
            c for c in statement.charges if c.meter == "credit_balance"
        ]
        credit_lines = [line for line in statement.lines if line.charge_class == "credit"]
        assert [(line.api_key_id, line.user_id, line.amount) for line in credit_lines] == [
            (None, None, -applied)
        ]
        ledger = show(settings, org)
        assert ledger.balances == {statement.currency: carried[org] - applied}
        assert sum((line.amount for line in ledger.lines), Decimal(0)) == carried[org] - applied
        assert [line.kind for line in ledger.lines] == ["grant", "consumption"]
        assert ledger.lines[1].invoice_number == number

        pdf = pdf_text(december.folder / f"{org}.pdf")
        for text in ("Net total", "Credit applied", "Amount due"):
            assert text in pdf
        assert money(-applied, statement.currency, "en_US") in pdf
        usage_table = pdf.split("Net total")[0]
        assert "Credit applied" not in usage_table.split("Amount due")[-1]
        sheet = list(csv.DictReader(io.StringIO((december.folder / f"{org}.csv").read_text())))
        credit_rows = [row for row in sheet if row["ChargeCategory"] == "Credit"]
        assert [(row["ChargeDescription"], Decimal(row["BilledCost"])) for row in credit_rows] == [
            ("Credit applied", -applied)
        ]
    allocation = list(csv.DictReader(io.StringIO((december.folder / "allocation.csv").read_text())))
    by_currency: dict[str, Decimal] = defaultdict(Decimal)
    for row in allocation:
        by_currency[row["currency"]] += Decimal(row["billed_cost"])
    expected: dict[str, Decimal] = defaultdict(Decimal)
    for statement in december.statements:
        expected[statement.currency] += totals[statement.org_id]
    assert by_currency == expected
    report = pdf_text(december.folder / "summary.pdf")
    assert "credit_applied" in report  # its own row of the totals by meter, not usage


def test_void_gives_back_used_credit_and_cannot_withdraw_credit_a_later_invoice_used(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    carried = carried_balances(make_settings, database_url)
    with upstream(make_settings, database_url) as settings:
        close_period(settings, DECEMBER, now=after(DECEMBER))
        org = sorted(carried)[0]
        currency = next(c for (o, c) in balances(database_url) if o == org)
        november_id, november_number, _ = live_invoice(database_url, org, NOVEMBER)
        december_id, december_number, _ = live_invoice(database_url, org, DECEMBER)
        used = carried[org] - balances(database_url)[(org, currency)]
        assert used > 0

        with pytest.raises(InvoiceStateError, match=f"void {december_number} first") as refused:
            void(settings, november_number, "wrong org")
        assert str(refused.value).startswith(
            f"{november_number}'s negative total (-{carried[org]:.2f} {currency}) was carried "
            f"to {org}'s credit balance and {december_number} used {used:.2f} of it"
        )
        assert balances(database_url)[(org, currency)] == carried[org] - used

        void(settings, december_number, "disputed")
        assert balances(database_url)[(org, currency)] == carried[org]
        entries = entries_of(database_url, org)
        consumed = [e for e in entries if e[1] == "consumption" and e[5] == december_id]
        reversed_ = [e for e in entries if e[1] == "reversal" and e[5] == december_id]
        assert [(e[3], e[4]) for e in reversed_] == [(-e[3], e[4]) for e in consumed]  # type: ignore[operator]

        again = close_period(settings, DECEMBER, now=after(DECEMBER), org_ids=[org])
        replacement_id, replacement_number, _ = live_invoice(database_url, org, DECEMBER)
        assert replacement_number != december_number
        assert credit_of(charges_of(database_url, replacement_id)) == [("Credit applied", -used)]
        assert_period_agrees(database_url, again.folder, str(DECEMBER))

        with pytest.raises(InvoiceStateError, match=f"void {replacement_number} first"):
            void(settings, november_number, "wrong org")
        void(settings, replacement_number, "disputed again")
        void(settings, november_number, "wrong org")
    assert balances(database_url)[(org, currency)] == 0
    withdrawn = [e for e in entries_of(database_url, org) if e[5] == november_id]
    grant_id = next(e[0] for e in withdrawn if e[1] == "grant")
    assert [(e[1], e[3], e[4]) for e in withdrawn if e[1] != "grant"] == [
        ("reversal", -carried[org], grant_id)
    ]
    assert show(settings, org).balances == {currency: Decimal(0)}


def test_grants_are_used_oldest_first_expired_ones_skipped_and_currencies_kept_apart(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("billing.db.ledger.FINALIZE_BATCH", 1)  # a batch per org
    with upstream(make_settings, database_url, orgs=2) as settings:
        close_period(settings, OCTOBER, options=DRAFT)
        # org-0002 is billed in USD, org-0001 in EUR (examples/orgs.yaml)
        old = grant(
            settings,
            "org-0002",
            "1.00",
            "USD",
            "goodwill",
            expires=date(2026, 11, 15),
            now=lambda: datetime(2026, 11, 1, tzinfo=UTC),
        )
        older_than_cli = grant(
            settings,
            "org-0002",
            "2.00",
            "usd",
            "prepaid",
            now=lambda: datetime(2026, 11, 2, tzinfo=UTC),
        )
        grant(settings, "org-0002", "50.00", "EUR", "wrong currency: never used by USD")
        grant(settings, "org-0001", "4.00", "EUR", "prepaid in euros")
        env = {
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
        }
        cli = CliRunner().invoke(
            app,
            [
                *("credits", "grant", "org-0002", "1000000.00", "--currency", "USD"),
                *("--reason", "prepaid plan", "--expires", "2099-01-01"),
            ],
            env=env,
        )
        assert cli.exit_code == 0, cli.output
        assert "granted $1,000,000.00 to org-0002" in cli.output
        assert "expires 2099-01-01" in cli.output
        for refused, message in (
            (["nobody", "5.00", "--currency", "USD"], "not in the org directory"),
            (["org-0002", "1.234", "--currency", "USD"], "more decimal places than USD"),
            (["org-0002", "0", "--currency", "USD"], "must be more than 0"),
            (["org-0002", "5", "--currency", "XYZ"], "not an ISO 4217"),
        ):
            result = CliRunner().invoke(
                app, ["credits", "grant", *refused, "--reason", "x"], env=env
            )
            assert result.exit_code == 1
            assert isinstance(result.exception, BillingError)
            assert message in str(result.exception)

        final = finalize_period(settings, OCTOBER)

    usd_id, _usd_number, usd_total = live_invoice(database_url, "org-0002", OCTOBER)
    usd_charges = charges_of(database_url, usd_id)
    due = before_credit(usd_charges)
    assert due > 2
    assert usd_total == 0  # never more than is due, never negative
    assert credit_of(usd_charges) == [("Credit applied", -due)]
    cli_grant = next(
        e[0] for e in entries_of(database_url, "org-0002") if e[3] == Decimal("1000000")
    )
    drawn = [
        (kind, amount, grant_id)
        for _id, kind, currency, amount, grant_id, _invoice in entries_of(database_url, "org-0002")
        if kind != "grant"
    ]
    assert drawn == [
        ("expiry", Decimal("-1.00"), old.entry_id),
        ("consumption", Decimal("-2.00"), older_than_cli.entry_id),
        ("consumption", -(due - 2), cli_grant),
    ]
    usd_left = Decimal("1000002.00") - due
    assert balances(database_url) == {
        ("org-0002", "USD"): usd_left,
        ("org-0002", "EUR"): Decimal("50.00"),
        ("org-0001", "EUR"): Decimal("0.00"),
    }
    eur_id, _n, eur_total = live_invoice(database_url, "org-0001", OCTOBER)
    eur_charges = charges_of(database_url, eur_id)
    assert credit_of(eur_charges) == [("Credit applied", Decimal("-4.00"))]
    assert eur_total == before_credit(eur_charges) - 4
    assert_period_agrees(database_url, final.folder, str(OCTOBER))

    shown = CliRunner().invoke(app, ["credits", "show", "org-0002", "--format", "json"], env=env)
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.output)
    assert printed["balances"] == {"EUR": "50.00", "USD": f"{usd_left:.2f}"}
    assert sum(Decimal(e["amount"]) for e in printed["entries"] if e["currency"] == "USD") == (
        usd_left
    )
    ledger = show(settings, "org-0002")
    for currency in ("USD", "EUR"):
        lines = [line for line in ledger.lines if line.currency == currency]
        assert ledger.balances[currency] == sum((line.amount for line in lines), Decimal(0))
    assert ledger.balances == {"USD": usd_left, "EUR": Decimal("50.00")}

    # Past the CLI grant's expiry nothing is recorded yet, but the ledger shown still sums.
    later = show(settings, "org-0002", now=lambda: datetime(2099, 1, 2, tzinfo=UTC))
    pending = [line for line in later.lines if line.id is None]
    assert [(p.kind, p.amount, p.grant_id, p.reason) for p in pending] == [
        ("expiry", -usd_left, cli_grant, PENDING_EXPIRY)
    ]
    assert later.balances == {"USD": Decimal(0), "EUR": Decimal("50.00")}
    assert balances(database_url)[("org-0002", "USD")] == usd_left
