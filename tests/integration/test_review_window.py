"""The review window: a close that opens one stores drafts only; a re-close inside it takes in
late usage with no correction; beat finalizes at its end, once, numbers gapless in org order;
held drafts stay drafts until released. On SQLite and PostgreSQL, with a driven clock."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from pypdf import PdfReader
from sqlmodel import Session

from billing.close import distributed
from billing.close.distributed import Work
from billing.close.inline import close_period, finalize_period
from billing.close.review import finalize_due_reviews
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.db.engine import ledger
from billing.db.repository import load_statements
from billing.domain import Statement
from billing.errors import ConfigError, InvoiceStateError
from billing.finance.invoices import run_detail
from billing.finance.review import hold, release
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator
from tests.support.agreement import assert_period_agrees, count, rows
from tests.support.processes import run_billing
from tests.support.reference import reference_totals

OCTOBER = BillingPeriod.parse("2026-10")
LATE_DAYS = 3  # the last days of October reach the upstream only on day 2 of the window
DAY_0 = OCTOBER.end + timedelta(days=1, hours=6)  # 2026-11-02 06:00 UTC: beat's close
REVIEW_DAYS = 3
DEADLINE = DAY_0 + timedelta(days=REVIEW_DAYS)
REVIEW = CloseOptions(review=True)


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@contextmanager
def upstream(
    make_settings: Callable[..., Settings],
    database_url: str,
    *,
    late: bool = False,
    orgs: int = 5,
    review_days: int = REVIEW_DAYS,
) -> Iterator[tuple[Settings, str]]:
    """Settings (review window of `review_days`) against an emulator; with `late` the last
    days of October are not reported yet."""
    reported_until = OCTOBER.end_unix - LATE_DAYS * 86_400 if late else None
    with running_emulator(
        orgs=orgs, seed=5, page_size=200, reported_until=reported_until
    ) as base_url:
        yield (
            make_settings(
                database_url=database_url,
                mka1_base_url=base_url,
                mka1_api_key=SecretStr("t"),
                review_days=review_days,
                render_processes=1,
            ),
            base_url,
        )


def invoices(database_url: str) -> list[tuple[object, ...]]:
    """(org, number, status) of October's live invoices, in org order."""
    return rows(
        database_url,
        "SELECT org_id, number, status FROM invoice WHERE period = '2026-10' "
        "AND status <> 'void' ORDER BY org_id",
    )


def numbers(first: int, last: int) -> list[str]:
    return [f"INV-{DAY_0.year}-{n:06d}" for n in range(first, last + 1)]


def test_a_window_of_3_days_takes_in_late_usage_and_ends_finalized_with_no_correction(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    said: list[str] = []
    with upstream(make_settings, database_url, late=True) as (settings, base_url):
        opened = close_period(
            settings, OCTOBER, now=at(DAY_0), options=REVIEW, progress=said.append
        )
        early = reference_totals(base_url, OCTOBER)
    # Day 0: a draft close (no numbers, no email, DRAFT on every page) that records the window.
    assert any("review window of 2026-10 open until 2026-11-05 06:00 UTC" in s for s in said)
    assert {s.status for s in opened.statements} == {"draft"}
    assert opened.emails_sent == 0
    assert count(database_url, "email_delivery") == 0
    assert all(
        "DRAFT" in page.extract_text() for page in PdfReader(opened.folder / "org-0001.pdf").pages
    )
    assert rows(database_url, "SELECT operation, review_deadline IS NOT NULL FROM billing_run") == [
        ("review", True)
    ]
    assert run_detail(settings, opened.run_id).run.review_deadline == DEADLINE
    assert assert_period_agrees(database_url, opened.folder, str(OCTOBER)) == early

    # Day 2: the late days have arrived; a plain close only replaces the drafts.
    said.clear()
    with upstream(make_settings, database_url) as (settings, base_url):
        day_2 = DAY_0 + timedelta(days=2)
        again = close_period(settings, OCTOBER, now=at(day_2), progress=said.append)
        due = reference_totals(base_url, OCTOBER)
        assert due != early, "the late days must change some totals"
        assert any("the review window of 2026-10 is open until 2026-11-05 06:00" in s for s in said)
        assert {s.status for s in again.statements} == {"draft"}
        assert {o["action"] for o in again.org_outcomes} == {"drafted"}
        assert run_detail(settings, again.run_id).run.review_deadline == DEADLINE  # it stays

        # Before the deadline beat finalizes nothing.
        assert finalize_due_reviews(settings, now=at(DEADLINE - timedelta(minutes=1))) == []
        assert {status for _org, _number, status in invoices(database_url)} == {"draft"}

        # The window ends: beat finalizes every draft, in org order, gapless.
        ended = finalize_due_reviews(settings, now=at(DEADLINE + timedelta(minutes=1)))
        assert [(e.period, e.outcome, e.finalized, e.held) for e in ended] == [
            ("2026-10", "finalized", len(due), [])
        ]
        final = invoices(database_url)
        assert [number for _org, number, _status in final] == numbers(1, len(due))
        folder = again.folder
        assert assert_period_agrees(database_url, folder, str(OCTOBER)) == due
        assert count(database_url, "invoice_correction") == 0
        assert rows(database_url, "SELECT DISTINCT corrections_count FROM billing_run") == [(0,)]
        finalize_run = ended[0].run_id
        assert rows(
            database_url,
            f"SELECT operation, trigger, status FROM billing_run WHERE id = {finalize_run}",  # noqa: S608
        ) == [("finalize", "review-window", "succeeded")]
        assert "DRAFT" not in PdfReader(folder / "org-0001.pdf").pages[0].extract_text()

        # Each contact got its statement once, through the outbox.
        deliveries = rows(
            database_url,
            "SELECT i.org_id, d.recipient, d.status FROM email_delivery d "
            "JOIN invoice i ON i.id = d.invoice_id ORDER BY i.org_id, d.recipient",
        )
        contacts = sorted(
            (s.org_id, address) for s in final_statements(settings) for address in s.emails
        )
        assert contacts, "some orgs must have contacts"
        assert [(org, to) for org, to, _status in deliveries] == contacts
        assert {status for _org, _to, status in deliveries} == {"sent"}
        assert len(list((folder / "emails").glob("*.eml"))) == len({org for org, _ in contacts})

        # Later beats find nothing to do: nothing is finalized or sent twice.
        before = invoices(database_url)
        later = DEADLINE + timedelta(minutes=6)
        assert finalize_due_reviews(settings, now=at(later)) == []
        assert invoices(database_url) == before
        assert count(database_url, "email_delivery") == len(contacts)


def final_statements(settings: Settings) -> list[Statement]:
    """October's statements as stored (with their contacts)."""
    with ledger(settings) as engine, Session(engine) as session:
        return list(load_statements(session, OCTOBER))


def test_a_held_draft_stays_a_draft_and_is_finalized_with_the_next_number_once_released(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url) as (settings, _base_url):
        close_period(settings, OCTOBER, now=at(DAY_0), options=REVIEW)
        drafts = {
            str(org): int(str(i)) for i, org in rows(database_url, "SELECT id, org_id FROM invoice")
        }
        held = hold(settings, str(drafts["org-0002"]), "usage disputed by the customer")
        assert (held.org_id, held.period, held.window_ends) == ("org-0002", "2026-10", DEADLINE)
        with pytest.raises(InvoiceStateError, match="already on hold"):
            hold(settings, str(drafts["org-0002"]), "twice")

        # A re-close inside the window replaces the draft: the hold is kept by org and period.
        close_period(settings, OCTOBER, now=at(DAY_0 + timedelta(days=1)))
        assert count(database_url, "review_hold") == 1

        ended = finalize_due_reviews(settings, now=at(DEADLINE + timedelta(minutes=1)))
        assert [(e.outcome, e.finalized, e.held) for e in ended] == [("finalized", 4, ["org-0002"])]
        states = invoices(database_url)
        assert [(n, s) for org, n, s in states if org == "org-0002"] == [(None, "draft")]
        assert [n for org, n, _s in states if org != "org-0002"] == numbers(1, 4)  # gapless
        outcomes = run_detail(settings, int(str(ended[0].run_id))).org_outcomes
        assert {
            "org_id": "org-0002",
            "action": "held",
            "detail": "usage disputed by the customer",
        } in outcomes

        # Neither billing finalize nor later beats number it.
        with pytest.raises(
            InvoiceStateError, match=r"every draft of 2026-10 is on hold \(org-0002\)"
        ):
            finalize_period(settings, OCTOBER, now=at(DEADLINE + timedelta(hours=1)))
        assert finalize_due_reviews(settings, now=at(DEADLINE + timedelta(hours=2))) == []
        assert [s for org, _n, s in invoices(database_url) if org == "org-0002"] == ["draft"]

        # Released, the next beat finalizes it with the next number.
        draft_id = rows(database_url, "SELECT id FROM invoice WHERE org_id = 'org-0002'")[0][0]
        released = release(settings, str(draft_id), "customer agreed")
        assert released.reason == "usage disputed by the customer; released: customer agreed"
        ended = finalize_due_reviews(settings, now=at(DEADLINE + timedelta(hours=3)))
        assert [(e.outcome, e.finalized, e.held) for e in ended] == [("finalized", 1, [])]
        assert [n for org, n, _s in invoices(database_url) if org == "org-0002"] == numbers(5, 5)
        assert finalize_due_reviews(settings, now=at(DEADLINE + timedelta(hours=4))) == []
    assert rows(database_url, "SELECT org_id, released_by IS NOT NULL FROM review_hold") == [
        ("org-0002", True)
    ]


def test_a_plain_close_keeps_a_held_draft_back_and_numbers_the_rest_gapless(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """No window (BILLING_REVIEW_DAYS 0): holds still keep drafts back from a close."""
    with upstream(make_settings, database_url, review_days=0) as (settings, _base_url):
        close_period(settings, OCTOBER, now=at(DAY_0), options=CloseOptions(draft=True))
        with pytest.raises(ConfigError, match="--review needs a review window"):
            close_period(settings, OCTOBER, now=at(DAY_0), options=REVIEW)
        assert count(database_url, "billing_run") == 1  # refused before anything was recorded
        draft = rows(database_url, "SELECT id FROM invoice WHERE org_id = 'org-0001'")[0][0]
        held = hold(settings, str(draft), "check the rate card")
        assert held.window_ends is None
        result = close_period(settings, OCTOBER, now=at(DAY_0 + timedelta(hours=1)))
    assert [o for o in result.org_outcomes if o["action"] == "held"] == [
        {"org_id": "org-0001", "action": "held", "detail": "check the rate card"}
    ]
    states = invoices(database_url)
    assert states[0] == ("org-0001", None, "draft")
    assert [number for _org, number, _status in states[1:]] == numbers(1, 4)
    with pytest.raises(InvoiceStateError, match=r"only a draft can be held.*billing void INV-"):
        hold(settings, str(states[1][1]), "too late")


def drain(settings: Settings, work: Work) -> None:
    """Run a distributed close's steps in order, as workers would."""
    queue = [work]
    while queue:
        step = queue.pop(0)
        run_id = step.run_id
        found: list[Work] = []
        if step.fetch:
            found.append(distributed.fetch(settings, run_id))
        found += [distributed.rate_batch(settings, run_id, unit) for unit in step.rate]
        if step.render:
            found.append(distributed.render_invoices(settings, run_id, step.render))
        if step.email:
            found.append(distributed.email_invoices(settings, run_id, step.email))
        if step.report:
            found.append(distributed.report(settings, run_id))
        queue += [item for item in found if item]


def test_the_distributed_close_opens_the_window_and_a_close_inside_it_only_drafts(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    with upstream(make_settings, database_url, late=True, orgs=3) as (settings, _base_url):
        opened = distributed.begin_close(
            settings, OCTOBER, trigger="celery-beat", options=REVIEW, now=at(DAY_0)
        )
        drain(settings, Work(opened, fetch=True))
    with upstream(make_settings, database_url, orgs=3) as (settings, base_url):
        again = distributed.begin_close(
            settings, OCTOBER, trigger="cli", now=at(DAY_0 + timedelta(days=2))
        )
        drain(settings, Work(again, fetch=True))
        due = reference_totals(base_url, OCTOBER)
        runs = rows(
            database_url,
            "SELECT id, operation, status, finalized_count FROM billing_run ORDER BY id",
        )
        assert runs == [(opened, "review", "succeeded", 0), (again, "review", "succeeded", 0)]
        assert {run_detail(settings, r).run.review_deadline for r in (opened, again)} == {DEADLINE}
        assert {status for _o, _n, status in invoices(database_url)} == {"draft"}
        ended = finalize_due_reviews(settings, now=at(DEADLINE + timedelta(minutes=1)))
        assert [(e.outcome, e.finalized) for e in ended] == [("finalized", 3)]
    assert [number for _o, number, _s in invoices(database_url)] == numbers(1, 3)
    folder = settings.output_dir / "2026-10"
    assert assert_period_agrees(database_url, folder, str(OCTOBER)) == due
    assert count(database_url, "invoice_correction") == 0


def test_hold_and_release_through_the_cli_and_a_finalized_invoice_is_refused(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with upstream(make_settings, database_url, orgs=3, review_days=0) as (settings, base_url):
        close_period(settings, OCTOBER, options=CloseOptions(draft=True))
        env = {
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(settings.output_dir),
            "MKA1_BASE_URL": base_url,
            "MKA1_API_KEY": "t",
            "BILLING_BROKER_URL": "",
            "BILLING_RENDER_PROCESSES": "1",
            "BILLING_REVIEW_DAYS": "0",
            "COLUMNS": "200",
        }

        def billing(*args: str) -> subprocess.CompletedProcess[str]:
            return run_billing(*args, env=env, cwd=tmp_path)

        refused = billing("close", "--period", "2026-10", "--review")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            "error: --review needs a review window: set BILLING_REVIEW_DAYS to the days drafts "
            "stay open for review (it is 0), or close without --review"
        ]
        draft = rows(database_url, "SELECT id FROM invoice WHERE org_id = 'org-0002'")[0][0]
        held = billing("invoices", "hold", str(draft), "--reason", "[red]disputed[/red]")
        assert held.returncode == 0, held.stderr
        assert (
            held.stdout.split()
            == (
                f"draft {draft} (org-0002, 2026-10) is on hold: it stays a draft until "
                f"billing invoices release {draft}"
            ).split()
        )
        listed = billing("invoices", "list", "--period", "2026-10")
        assert listed.returncode == 0, listed.stderr
        cells = [line.split("│") for line in listed.stdout.splitlines() if "org-000" in line]
        states = [(cell[4].strip(), cell[3].strip()) for cell in cells]
        assert states == [
            ("org-0001", "draft"),
            ("org-0002", "draft, held"),
            ("org-0003", "draft"),
        ], listed.stdout
        shown = billing("invoices", "show", str(draft))
        assert shown.returncode == 0, shown.stderr
        assert "UTC: [red]disputed[/red] (billing invoices release" in shown.stdout
        held_json = json.loads(billing("invoices", "show", str(draft), "--format", "json").stdout)
        assert held_json["held"]["reason"] == "[red]disputed[/red]"
        again = billing("invoices", "hold", str(draft), "--reason", "twice")
        assert again.returncode == 1
        assert "is already on hold" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1

        finalized = billing("finalize", "--period", "2026-10")
        assert finalized.returncode == 0, finalized.stderr
        assert "1 held: org-0002 ([red]disputed[/red])" in finalized.stdout  # printed literally
        numbered = rows(
            database_url,
            "SELECT org_id, number FROM invoice WHERE number IS NOT NULL ORDER BY org_id",
        )
        assert [org for org, _number in numbered] == ["org-0001", "org-0003"]
        finalize_run = rows(database_url, "SELECT max(id) FROM billing_run")[0][0]
        shown = billing("runs", "show", str(finalize_run))
        assert shown.returncode == 0, shown.stderr
        assert "org-0002: held [red]disputed[/red]" in shown.stdout

        number = str(numbered[0][1])
        not_a_draft = billing("invoices", "hold", number, "--reason", "late")
        assert not_a_draft.returncode == 1
        [line] = not_a_draft.stderr.strip().splitlines()
        assert f"invoice {number} of org-0001 for 2026-10 is " in line
        assert f"a finalized invoice never changes; billing void {number} --reason" in line

        released = billing("invoices", "release", str(draft), "--reason", "agreed")
        assert released.returncode == 0, released.stderr
        assert (
            released.stdout.split()
            == (
                f"draft {draft} (org-0002, 2026-10) is released: billing finalize --period 2026-10 "
                "finalizes it"
            ).split()
        )
        twice = billing("invoices", "release", str(draft))
        assert twice.returncode == 1
        assert "is not on hold: nothing to release" in twice.stderr
        assert billing("finalize", "--period", "2026-10").returncode == 0
    assert rows(database_url, "SELECT number FROM invoice WHERE org_id = 'org-0002'") == [
        (f"{str(numbered[0][1])[:9]}000003",)  # the next number
    ]
