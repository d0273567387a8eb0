"""Webhooks against a real HTTP receiver on loopback, on SQLite and PostgreSQL: events written
in the changing transaction (none for a rolled-back change), signed so a receiver can verify
them, each delivered once after failures with backoff, the same event id on every try."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from billing.close import distributed
from billing.close.inline import close_period, finalize_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.errors import InvoiceStateError
from billing.finance.credit_notes import CreditRequest, create_credit_note
from billing.finance.invoices import void
from billing.finance.webhooks import deliver_due, webhook_status
from billing.periods import BillingPeriod
from billing.states import UnitStep
from billing.usage.emulator import running_emulator
from tests.support.agreement import rows
from tests.support.processes import run_billing
from tests.support.webhook_receiver import verify_signature, webhook_receiver

OCTOBER = BillingPeriod.parse("2026-10")
SECRET = "whsec_0123456789abcdef0123456789abcdef"


def endpoints_file(folder: Path, *endpoints: tuple[str, str, str]) -> Path:
    """A BILLING_WEBHOOKS file: (name, url, events) with the test secret."""
    lines = ["endpoints:"]
    for name, url, events in endpoints:
        lines += [
            f"  - name: {name}",
            f"    url: {url}",
            f"    secret: {SECRET}",
            f"    events: {events}",
        ]
    path = folder / "webhooks.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def emulator() -> Iterator[str]:
    with running_emulator(orgs=4, seed=11) as base_url:
        yield base_url


def settings_for(
    make_settings: Callable[..., Settings],
    database_url: str,
    base_url: str,
    hooks: Path,
    **more: object,
) -> Settings:
    return make_settings(
        database_url=database_url,
        mka1_base_url=base_url,
        mka1_api_key=SecretStr("t"),
        webhooks=hooks,
        **more,
    )


def events_in_ledger(database_url: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (str(event_id), str(kind), json.loads(str(payload)))
        for event_id, kind, payload in rows(
            database_url, "SELECT event_id, type, payload FROM webhook_event ORDER BY id"
        )
    ]


def at(offset: timedelta) -> Callable[[], datetime]:
    moment = datetime.now(UTC) + offset
    return lambda: moment


@pytest.mark.postgres
def test_a_close_signs_one_finalized_event_per_invoice_that_the_receiver_verifies(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver() as receiver:
        hooks = endpoints_file(tmp_path, ("erp", receiver.url, "'*'"))
        settings = settings_for(make_settings, database_url, emulator, hooks)
        result = close_period(settings, OCTOBER)
        counts = deliver_due(settings)
        assert deliver_due(settings).tried == 0  # nothing is sent twice

    invoices = {
        str(number): (str(org), Decimal(str(total)), str(currency), str(status))
        for number, org, total, currency, status in rows(
            database_url,
            "SELECT number, org_id, total, currency, status FROM invoice WHERE period = '2026-10'",
        )
    }
    assert len(invoices) == len(result.invoices) >= 4
    finalized = [e for e in receiver.delivered_events() if e["type"] == "invoice.finalized"]
    assert sorted(event["data"]["number"] for event in finalized) == sorted(invoices)
    for event in finalized:
        data = event["data"]
        org, total, currency, _ = invoices[data["number"]]
        assert (data["org_id"], data["period"], data["currency"]) == (org, "2026-10", currency)
        assert isinstance(data["total"], str)
        assert Decimal(data["total"]) == total
        assert data["total"] == f"{total:.2f}"  # the currency's places, as a string
        assert data["status"] == "finalized"
        assert event["id"].startswith("evt_")
        assert len(event["id"]) == 36
        assert event["created"].endswith("Z")
    # The statements went out by the file backend: each listed org's invoice is sent.
    sent = {e["data"]["number"] for e in receiver.delivered_events() if e["type"] == "invoice.sent"}
    assert sent == {number for number, facts in invoices.items() if facts[3] == "sent"}
    assert sent
    (succeeded,) = [e for e in receiver.delivered_events() if e["type"] == "run.succeeded"]
    assert succeeded["data"]["run_id"] == result.run_id
    assert succeeded["data"]["operation"] == "close"
    assert counts.delivered == len(receiver.requests) == len(events_in_ledger(database_url))

    for request in receiver.requests:
        header = request.headers["billing-signature"]
        assert verify_signature(SECRET, header, request.body)
        assert not verify_signature("whsec_another_secret_of_some_length", header, request.body)
        assert not verify_signature(SECRET, header, request.body + b" ")
        # A replay long after its timestamp is refused by the documented check.
        assert not verify_signature(
            SECRET, header, request.body, now=datetime.now(UTC).timestamp() + 600
        )
        assert request.headers["content-type"] == "application/json"
        assert request.headers["billing-event-id"] == request.event["id"]
        assert request.path == "/hooks"


@pytest.mark.postgres
def test_each_event_is_delivered_once_after_the_receiver_fails_twice(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver(fail_each_first=2) as receiver:
        hooks = endpoints_file(
            tmp_path, ("erp", receiver.url, "[invoice.finalized, run.succeeded]")
        )
        settings = settings_for(
            make_settings, database_url, emulator, hooks, webhook_max_attempts=5
        )
        close_period(settings, OCTOBER)
        expected = len(events_in_ledger(database_url)) - len(
            [e for e in events_in_ledger(database_url) if e[1] == "invoice.sent"]
        )

        first = deliver_due(settings, now=at(timedelta(0)))
        assert (first.delivered, first.retrying) == (0, expected)
        # Not due again until its backoff (30 s) has passed.
        assert deliver_due(settings, now=at(timedelta(seconds=20))).tried == 0
        second = deliver_due(settings, now=at(timedelta(seconds=45)))
        assert (second.delivered, second.retrying) == (0, expected)
        assert deliver_due(settings, now=at(timedelta(seconds=80))).tried == 0  # 1 min wait
        third = deliver_due(settings, now=at(timedelta(minutes=3)))
        assert (third.delivered, third.retrying, third.failed) == (expected, 0, 0)
        assert deliver_due(settings, now=at(timedelta(hours=5))).tried == 0

    tries = Counter(request.headers["billing-event-id"] for request in receiver.requests)
    assert len(tries) == expected
    assert set(tries.values()) == {3}
    delivered = Counter(request.headers["billing-event-id"] for request in receiver.delivered())
    assert set(delivered.values()) == {1}
    # Each event's three tries carried the same id and the same body byte for byte.
    for event_id in tries:
        bodies = {r.body for r in receiver.requests if r.headers["billing-event-id"] == event_id}
        assert len(bodies) == 1
        assert json.loads(bodies.pop())["id"] == event_id
    assert {event_id for event_id, _, _ in events_in_ledger(database_url)} >= set(tries)
    assert rows(
        database_url,
        "SELECT DISTINCT status, attempts, last_status_code FROM webhook_delivery",
    ) == [("delivered", 3, 200)]


@pytest.mark.postgres
def test_a_receiver_that_keeps_failing_is_given_up_on_with_its_reply_recorded(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver(fail_first=1000) as receiver:
        hooks = endpoints_file(tmp_path, ("erp", receiver.url, "[run.succeeded]"))
        settings = settings_for(
            make_settings, database_url, emulator, hooks, webhook_max_attempts=2
        )
        close_period(
            settings,
            OCTOBER,
        )
        assert deliver_due(settings, now=at(timedelta(0))).retrying == 1
        assert deliver_due(settings, now=at(timedelta(minutes=1))).failed == 1
        assert deliver_due(settings, now=at(timedelta(days=1))).tried == 0
    assert len(receiver.requests) == 2
    ((status, attempts, code, error),) = rows(
        database_url, "SELECT status, attempts, last_status_code, last_error FROM webhook_delivery"
    )
    assert (status, attempts, code) == ("failed", 2, 500)
    assert error == "HTTP 500: receiver says no: try later"


@pytest.mark.postgres
def test_nothing_is_delivered_for_a_finalize_rolled_back_after_numbering(
    make_settings: Callable[..., Settings],
    database_url: str,
    emulator: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import billing.db.ledger as ledger_module
    from billing.db.webhooks import record_finalized as real

    def numbered_then_fail(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # the events are written, in the finalize's transaction
        raise RuntimeError("the disk filled up after numbering")

    with webhook_receiver() as receiver:
        hooks = endpoints_file(tmp_path, ("erp", receiver.url, "'*'"))
        settings = settings_for(make_settings, database_url, emulator, hooks)
        close_period(settings, OCTOBER, options=draft_only())
        monkeypatch.setattr(ledger_module, "record_finalized", numbered_then_fail)
        with pytest.raises(RuntimeError, match="disk filled up"):
            finalize_period(settings, OCTOBER)
        deliver_due(settings)

    assert rows(database_url, "SELECT count(*) FROM invoice WHERE number IS NOT NULL") == [(0,)]
    kinds = [kind for _, kind, _ in events_in_ledger(database_url)]
    assert kinds == ["run.succeeded", "run.failed"]  # the draft close, then the finalize run
    delivered = receiver.delivered_events()
    assert [event["type"] for event in delivered] == kinds
    failed = delivered[1]["data"]
    assert failed["operation"] == "finalize"
    assert failed["status"] == "failed"
    assert "disk filled up" in failed["error"]


def draft_only() -> CloseOptions:
    return CloseOptions(draft=True)


@pytest.mark.postgres
def test_void_credit_note_and_a_refused_void_write_their_events_or_none(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver() as receiver:
        hooks = endpoints_file(
            tmp_path, ("erp", receiver.url, "[invoice.voided, credit_note.created]")
        )
        settings = settings_for(make_settings, database_url, emulator, hooks)
        result = close_period(settings, OCTOBER)
        billed = [invoice for invoice in result.invoices if invoice.total > 0]
        to_void, to_credit = billed[0], billed[1]
        before = len(events_in_ledger(database_url))
        void(settings, to_void.invoice_number, 'wrong card "enterprise"')
        with pytest.raises(InvoiceStateError, match="only finalized or sent"):
            void(settings, to_void.invoice_number, "again")  # refused: no event
        create_credit_note(
            settings,
            to_credit.invoice_number,
            CreditRequest(reason="goodwill", amount="1.00"),
        )
        assert len(events_in_ledger(database_url)) == before + 2
        deliver_due(settings)

    voided, credited = receiver.delivered_events()
    assert voided["type"] == "invoice.voided"
    assert voided["data"]["number"] == to_void.invoice_number
    assert voided["data"]["status"] == "void"
    assert voided["data"]["reason"] == 'wrong card "enterprise"'
    (recorded,) = rows(database_url, "SELECT voided_by FROM invoice WHERE status = 'void'")
    assert voided["data"]["voided_by"] == recorded[0]  # who voided it, as the ledger says
    assert recorded[0]
    assert credited["type"] == "credit_note.created"
    assert credited["data"]["invoice_number"] == to_credit.invoice_number
    assert credited["data"]["number"].startswith("CN-2026-")
    assert credited["data"]["total"] == "1.00"
    assert credited["data"]["settlement"] == "credit"
    # Only the events the endpoint asked for got a delivery.
    assert rows(database_url, "SELECT count(*) FROM webhook_delivery") == [(2,)]


@pytest.mark.postgres
def test_a_distributed_run_that_fails_sends_run_failed(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver() as receiver:
        hooks = endpoints_file(tmp_path, ("ops", receiver.url, "[run.failed, run.succeeded]"))
        settings = settings_for(make_settings, database_url, emulator, hooks)
        run_id = distributed.begin_close(settings, OCTOBER, trigger="test")
        work = distributed.fetch(settings, run_id)
        distributed.fail_unit(settings, run_id, UnitStep.RATE, work.rate[0], "a poison batch")
        deliver_due(settings)
    (event,) = receiver.delivered_events()
    assert event["type"] == "run.failed"
    assert event["data"]["run_id"] == run_id
    assert event["data"]["status"] == "failed"
    assert "a poison batch" in event["data"]["error"]


@pytest.mark.postgres
def test_two_senders_at_once_never_send_a_delivery_twice(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver(delay_seconds=0.05) as receiver:
        hooks = endpoints_file(tmp_path, ("erp", receiver.url, "'*'"))
        settings = settings_for(make_settings, database_url, emulator, hooks)
        close_period(settings, OCTOBER)
        total = len(events_in_ledger(database_url))
        problems: list[BaseException] = []

        def sender() -> None:
            try:
                deliver_due(settings)
            except BaseException as error:  # reported below
                problems.append(error)

        threads = [threading.Thread(target=sender) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert problems == []
    ids = [request.headers["billing-event-id"] for request in receiver.requests]
    assert len(ids) == len(set(ids)) == total


@pytest.mark.postgres
def test_an_endpoint_that_cannot_be_reached_is_not_hammered_in_one_pass(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    from tests.support.processes import free_port

    hooks = endpoints_file(tmp_path, ("gone", f"http://127.0.0.1:{free_port()}/x", "'*'"))
    settings = settings_for(make_settings, database_url, emulator, hooks)
    close_period(settings, OCTOBER)
    counts = deliver_due(settings)
    assert counts.retrying == 1  # one try, then the rest wait for the next pass
    assert counts.unreachable == ["gone"]
    assert counts.deferred >= 1
    statuses = Counter((row.status, row.attempts) for row in webhook_status(settings, OCTOBER))
    assert statuses[("pending", 1)] == 1
    assert statuses[("pending", 0)] == len(events_in_ledger(database_url)) - 1


@pytest.mark.postgres
def test_webhooks_status_and_send_through_the_real_cli(
    make_settings: Callable[..., Settings], database_url: str, emulator: str, tmp_path: Path
) -> None:
    with webhook_receiver(fail_first=1) as receiver:
        hooks = endpoints_file(tmp_path, ("erp", receiver.url, "[invoice.finalized]"))
        env = {
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
            "BILLING_WEBHOOKS": str(hooks),
            # Far enough that the failed try is not due again however slow the commands run.
            "BILLING_WEBHOOK_FIRST_RETRY_SECONDS": "3600",
            "MKA1_BASE_URL": emulator,
            "MKA1_API_KEY": "t",
        }
        # The close delivers at its end: the first try is refused (500), the rest arrive.
        closed = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
        assert closed.returncode == 0, closed.stderr
        assert "webhooks: " in closed.stderr
        status = run_billing(
            "webhooks", "status", "--period", "2026-10", "--format", "json", env=env, cwd=tmp_path
        )
        assert status.returncode == 0, status.stderr
        listed = json.loads(status.stdout)
        numbers = rows(database_url, "SELECT count(*) FROM invoice WHERE number IS NOT NULL")
        assert len(listed) == numbers[0][0]
        assert Counter(row["status"] for row in listed) == {
            "delivered": len(listed) - 1,
            "pending": 1,
        }
        (waiting,) = [row for row in listed if row["status"] == "pending"]
        assert (waiting["attempts"], waiting["code"], waiting["endpoint"]) == (1, 500, "erp")
        assert waiting["type"] == "invoice.finalized"
        assert waiting["event"].startswith("evt_")
        assert waiting["next_attempt"] is not None
        assert "receiver says no" in waiting["detail"]
        # Another month's filter finds none; the table form prints the counts.
        other = run_billing("webhooks", "status", "--period", "2026-09", env=env, cwd=tmp_path)
        assert "no deliveries" in other.stdout
        # `send` does not resend what is not yet due.
        sent = run_billing("webhooks", "send", env=env, cwd=tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert "no webhook due" in sent.stdout
    assert len(receiver.delivered()) == len(listed) - 1


def test_a_bad_webhooks_file_stops_the_close_before_anything_is_numbered(
    tmp_path: Path, emulator: str, sqlite_url: str
) -> None:
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text(
        "endpoints:\n"
        "  - name: erp\n"
        "    url: https://erp.example.com/hooks\n"
        "    secret_env: NOT_SET_ANYWHERE_1234\n"
        "    events: [invoice.finalized, invoice.paid]\n",
        encoding="utf-8",
    )
    env = {
        "BILLING_DATABASE_URL": sqlite_url,
        "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
        "BILLING_WEBHOOKS": str(hooks),
        "MKA1_BASE_URL": emulator,
        "MKA1_API_KEY": "t",
    }
    closed = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    assert closed.returncode == 1
    assert f"{hooks}:4: field endpoints.0.secret_env: environment variable" in closed.stderr
    assert "(and 1 more)" in closed.stderr
    assert "Traceback" not in closed.stderr
    assert not (tmp_path / "billing.db").exists() or rows(
        sqlite_url, "SELECT count(*) FROM invoice"
    ) == [(0,)]
    assert not (tmp_path / "statements" / "2026-10").exists()
