"""The REST API over real HTTP against `billing serve` as a process, on SQLite and PostgreSQL:
tokens and roles checked on the server, cursor pages that hold every invoice once, money as
strings in the JSON and in the OpenAPI document, figures that agree with the ledger and the
files, downloads, one-line JSON refusals, names returned verbatim."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing.config import Settings
from billing.db.engine import ledger
from billing.db.locks import period_lock
from billing.finance.access import revoke
from billing.statements.files import safe_stem
from tests.support.agreement import rows
from tests.support.api_data import (
    OCTOBER,
    SCRIPT_NAME,
    SCRIPTED_ORG,
    SEPTEMBER,
    Tokens,
    api_settings,
    seed_ledger,
    tokens,
)
from tests.support.api_server import ApiServer, served_api
from tests.support.seeded import SeededLedgers
from tests.support.webhook_receiver import verify_signature, webhook_receiver

Served = tuple[Settings, Tokens, ApiServer]


@pytest.fixture
def served(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    seeded_ledgers: SeededLedgers,
) -> Iterator[Served]:
    """A seeded ledger, a token per role and `billing serve` over it."""
    settings = api_settings(make_settings, tmp_path, database_url)
    seeded_ledgers.seed(settings)
    made = tokens(settings)
    with served_api(settings, tmp_path) as server:
        yield settings, made, server


def ledger_state(database_url: str) -> list[tuple[object, ...]]:
    return rows(
        database_url,
        "SELECT id, status, number, total FROM invoice ORDER BY id",
    ) + rows(database_url, "SELECT id, operation, status FROM billing_run ORDER BY id")


def draft_of(database_url: str, org_id: str) -> int:
    [(invoice_id,)] = rows(
        database_url,
        f"SELECT id FROM invoice WHERE org_id = '{org_id}' AND status = 'draft'",  # noqa: S608
    )
    assert isinstance(invoice_id, int)
    return invoice_id


def number_of(database_url: str, org_id: str, period: str) -> str:
    [(number,)] = rows(
        database_url,
        "SELECT number FROM invoice WHERE status <> 'void' AND "  # noqa: S608
        f"org_id = '{org_id}' AND period = '{period}'",
    )
    assert isinstance(number, str)
    return number


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    """A refusal: this status, a JSON body of exactly one `error` line naming these words."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


def test_every_request_needs_a_live_token_and_the_role_the_action_asks(served: Served) -> None:
    settings, made, server = served
    before = ledger_state(settings.database_url)
    with server.client() as anonymous:
        missing = anonymous.get("/invoices")
        assert_error(missing, 401, "Bearer")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = anonymous.get("/invoices", headers={"Authorization": "Bearer bk_not-a-token"})
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        assert "bk_not-a-token" not in assert_error(wrong, 401, "unknown or revoked")
        basic = anonymous.get("/invoices", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert_error(basic, 401)
        assert anonymous.get("/openapi.json").status_code == 200  # the contract is public
    with server.client(made.viewer) as viewer:
        assert viewer.get("/invoices").status_code == 200
        refused = viewer.post(f"/periods/{OCTOBER}/finalize")
        assert_error(refused, 403, "approver", "viewer")
        assert_error(
            viewer.post(
                f"/invoices/{draft_of(settings.database_url, 'org-0002')}/hold",
                json={"reason": "look"},
            ),
            403,
            "approver",
        )
    with server.client(made.approver) as approver:
        number = number_of(settings.database_url, "org-0001", str(SEPTEMBER))
        assert_error(approver.post(f"/invoices/{number}/void", json={"reason": "x"}), 403, "admin")
    assert ledger_state(settings.database_url) == before  # nothing was finalized, held, voided
    assert not rows(settings.database_url, "SELECT id FROM review_hold")
    [(token_id,)] = rows(settings.database_url, "SELECT id FROM api_token WHERE name='viewer-bot'")
    assert isinstance(token_id, int)
    revoke(settings, token_id)
    with server.client(made.viewer) as revoked:
        assert_error(revoked.get("/invoices"), 401, "unknown or revoked")
    [(used,)] = rows(settings.database_url, "SELECT last_used_at FROM api_token WHERE id = 2")
    assert used is not None  # the approver's token records its use


def all_pages(client: httpx.Client, limit: int, **filters: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": limit, **filters}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get("/invoices", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert len(body["items"]) == limit


def test_cursor_pages_return_every_invoice_once_in_one_stable_order(served: Served) -> None:
    settings, made, server = served
    stored = rows(settings.database_url, "SELECT id, period, org_id FROM invoice ORDER BY id")
    expected = [
        invoice_id
        for invoice_id, _period, _org in sorted(
            stored, key=lambda row: (-int(str(row[1]).replace("-", "")), str(row[2]), row[0])
        )
    ]
    with server.client(made.viewer) as client:
        for limit in (1, 2, 3, 500):
            listed = all_pages(client, limit)
            assert [item["id"] for item in listed] == expected
        october = all_pages(client, 2, period=str(OCTOBER))
        assert {item["status"] for item in october} == {"draft"}
        assert len(october) == 5
        sent = all_pages(client, 2, status="sent", period=str(SEPTEMBER))
        assert [item["org_id"] for item in sent] == sorted(item["org_id"] for item in sent)
        assert len({item["id"] for item in sent}) == len(sent) > 0
        one_org = all_pages(client, 1, org="org-0002")
        assert [item["period"] for item in one_org] == [str(OCTOBER), str(SEPTEMBER)]
        assert_error(client.get("/invoices", params={"cursor": "not-ours"}), 422, "cursor")
        assert_error(client.get("/invoices", params={"status": "paid"}), 422, "status")
        assert_error(client.get("/invoices", params={"period": "2026-13"}), 422, "2026-13")
        assert_error(client.get("/invoices", params={"limit": 0}), 422, "limit")


def walk(node: object, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON-schema object in an OpenAPI document, with where it is."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def test_money_is_a_decimal_string_that_agrees_with_the_ledger_and_the_csv(served: Served) -> None:
    settings, made, server = served
    with server.client() as anonymous:
        document = anonymous.get("/openapi.json").json()
    numbers = [path for path, schema in walk(document) if schema.get("type") == "number"]
    assert numbers == []  # no float anywhere: money, quantities and rates are strings
    schemas = document["components"]["schemas"]
    for model, field in (
        ("InvoiceItem", "total"),
        ("Charge", "amount"),
        ("Line", "amount"),
        ("AdjustRequest", "amount"),
        ("PeriodSummary", "totals"),
    ):
        declared = schemas[model]["properties"][field]
        declared = declared.get("additionalProperties", declared)
        assert declared["type"] == "string", (model, field)
        assert declared["pattern"].startswith("^[+-]?[0-9]+"), (model, field)
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"

    number = number_of(settings.database_url, "org-0002", str(SEPTEMBER))
    with server.client(made.viewer) as client:
        invoice = client.get(f"/invoices/{number}").json()
        csv_text = client.get(f"/invoices/{number}/csv").text
    [(stored_total,)] = rows(
        settings.database_url,
        f"SELECT total FROM invoice WHERE number = '{number}'",  # noqa: S608
    )
    assert isinstance(invoice["total"], str)
    assert Decimal(invoice["total"]) == Decimal(str(stored_total))
    assert invoice["total"] == f"{Decimal(str(stored_total)):.2f}"  # USD: two places, always
    assert sum(Decimal(charge["amount"]) for charge in invoice["charges"]) == Decimal(
        invoice["total"]
    )
    assert sum(Decimal(line["amount"]) for line in invoice["lines"]) == Decimal(invoice["total"])
    billed = [Decimal(row["BilledCost"]) for row in csv.DictReader(io.StringIO(csv_text))]
    assert sum(billed) == Decimal(invoice["total"])
    assert all(isinstance(line["amount"], str) for line in invoice["lines"])
    assert all(isinstance(charge["quantity"], str) for charge in invoice["charges"])
    assert invoice["finalized_at"].endswith("Z")
    assert invoice["status"] == "sent"
    assert [entry["event"] for entry in invoice["timeline"]][:2] == ["created", "finalized"]
    assert {d["status"] for d in invoice["deliveries"]} == {"sent"}
    assert all(d["server_reply"] for d in invoice["deliveries"])  # the server's words


def test_statement_downloads_are_the_period_files_or_rendered_when_missing(
    served: Served,
) -> None:
    settings, made, server = served
    number = number_of(settings.database_url, "org-0001", str(SEPTEMBER))
    draft = draft_of(settings.database_url, SCRIPTED_ORG)
    folder = settings.output_dir
    with server.client(made.viewer) as client:
        pdf = client.get(f"/invoices/{number}/pdf")
        assert pdf.status_code == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == f'attachment; filename="{number}.pdf"'
        assert pdf.content == (folder / str(SEPTEMBER) / "org-0001.pdf").read_bytes()
        draft_csv = client.get(f"/invoices/{draft}/csv")
        assert draft_csv.headers["content-type"].startswith("text/csv")
        name = f"{safe_stem(SCRIPTED_ORG)}-draft-{draft}.csv"
        assert draft_csv.headers["content-disposition"] == f'attachment; filename="{name}"'
        written = folder / str(OCTOBER) / f"{safe_stem(SCRIPTED_ORG)}.csv"
        assert draft_csv.content == written.read_bytes()
        assert SCRIPT_NAME in draft_csv.text  # the name, as data, in the CSV
        written.unlink()
        (folder / str(OCTOBER) / f"{safe_stem(SCRIPTED_ORG)}.pdf").unlink()
        again = client.get(f"/invoices/{draft}/csv")
        assert again.content == draft_csv.content  # rendered from the ledger, byte for byte
        assert written.is_file()
        rendered = client.get(f"/invoices/{draft}/pdf")
        assert rendered.content.startswith(b"%PDF-")
        assert_error(client.get("/invoices/INV-2099-999999/pdf"), 404, "INV-2099-999999")


def test_period_org_run_and_names_read_back_as_the_ledger_and_reports_hold_them(
    served: Served,
) -> None:
    settings, made, server = served
    with server.client(made.viewer) as client:
        summary = client.get(f"/periods/{SEPTEMBER}/summary").json()
        allocation = client.get(f"/periods/{SEPTEMBER}/allocation").json()
        org = client.get(f"/orgs/{SCRIPTED_ORG}")
        listed = client.get("/invoices", params={"org": SCRIPTED_ORG}).json()
        runs = client.get("/runs", params={"period": str(SEPTEMBER)}).json()["items"]
        run = client.get(f"/runs/{runs[0]['id']}").json()
        october = client.get(f"/periods/{OCTOBER}/summary").json()
        assert_error(client.get("/orgs/org-nobody"), 404, "org-nobody")
        assert_error(client.get("/runs/9999"), 404, "9999")
        assert_error(client.get("/periods/2026-9/summary"), 422)
    report = list(
        csv.DictReader(
            io.StringIO((settings.output_dir / str(SEPTEMBER) / "summary.csv").read_text())
        )
    )
    totals: dict[str, Decimal] = {}
    for row in report:
        totals[row["currency"]] = totals.get(row["currency"], Decimal(0)) + Decimal(row["total"])
    assert {c: Decimal(t) for c, t in summary["totals"].items()} == totals
    assert all(isinstance(t, str) for t in summary["totals"].values())
    states = rows(
        settings.database_url,
        f"SELECT status, COUNT(*) FROM invoice WHERE period = '{SEPTEMBER}' GROUP BY status",  # noqa: S608
    )
    assert summary["counts"] == {
        "draft": 0,
        "finalized": 0,
        "sent": 0,
        "void": 0,
        "held": 0,
        **{str(state): int(str(n)) for state, n in states},
    }
    assert summary["counts"]["sent"] >= 4  # each org with a contact; the rest stay finalized
    assert summary["emails"]["sent"] > 0
    assert summary["emails"]["pending"] == 0
    assert october["counts"]["draft"] == 5
    by_currency: dict[str, Decimal] = {}
    for row in allocation["rows"]:
        by_currency[row["currency"]] = by_currency.get(row["currency"], Decimal(0)) + Decimal(
            row["amount"]
        )
    assert by_currency == totals
    assert allocation["totals"] == summary["totals"]
    allocated = list(
        csv.DictReader(
            io.StringIO((settings.output_dir / str(SEPTEMBER) / "allocation.csv").read_text())
        )
    )
    assert len(allocated) == len(allocation["rows"])

    assert org.status_code == 200
    assert org.headers["content-type"] == "application/json"
    assert org.headers["x-content-type-options"] == "nosniff"
    assert org.json()["name"] == SCRIPT_NAME  # verbatim: JSON carries it as data
    assert SCRIPT_NAME in org.text
    assert [i["period"] for i in org.json()["invoices"]] == [str(OCTOBER), str(SEPTEMBER)]
    assert {item["org_name"] for item in listed["items"]} == {SCRIPT_NAME}
    assert run["operation"] == "close"
    assert run["status"] == "succeeded"
    assert run["usage_checksum"]
    assert run["rate_cards"][0]["content_hash"]
    assert set(run["totals"]) == set(totals)
    assert "test-key" not in str(run)  # the upstream key never appears


def test_refusals_are_one_line_of_json_with_the_fitting_status(served: Served) -> None:
    settings, made, server = served
    draft = draft_of(settings.database_url, "org-0002")
    number = number_of(settings.database_url, "org-0002", str(SEPTEMBER))
    with server.client(made.admin) as client:
        as_float = client.post(
            f"/invoices/{draft}/adjustments",
            json={"description": "Goodwill", "amount": -1.5, "reason": "sorry"},
        )
        assert_error(as_float, 422, "amount")
        assert_error(
            client.post(
                f"/invoices/{draft}/adjustments",
                json={"description": "Goodwill", "amount": "1e3", "reason": "sorry"},
            ),
            422,
            "amount",
        )
        assert_error(
            client.post(f"/invoices/{draft}/hold", json={"reason": "x", "extra": 1}), 422, "extra"
        )
        assert_error(client.post(f"/invoices/{draft}/hold", content=b"{nope"), 422)
        assert_error(client.post(f"/invoices/{number}/hold", json={"reason": "x"}), 409, "sent")
        assert_error(client.post(f"/invoices/{draft}/void", json={"reason": "x"}), 422, "number")
        assert_error(client.post("/invoices/777/release"), 404, "777")
        assert_error(client.post("/adjustments/777/cancel", json={"reason": "x"}), 404, "777")
        assert_error(
            client.post(f"/invoices/{number}/resend", json={"to": "someone@else.example"}),
            422,
            "not a billing contact",
        )
        with ledger(settings) as engine, period_lock(engine, str(OCTOBER)):
            busy = client.post(f"/periods/{OCTOBER}/finalize")
            assert_error(busy, 409, str(OCTOBER))
            assert_error(client.post(f"/periods/{OCTOBER}/emails/send"), 409, str(OCTOBER))
    assert not rows(settings.database_url, "SELECT id FROM invoice_adjustment")
    assert not rows(settings.database_url, "SELECT id FROM review_hold")


def test_an_api_action_delivers_its_webhook_events_without_a_broker(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    secret = "a-long-enough-webhook-secret"
    with webhook_receiver() as receiver:
        hooks = tmp_path / "webhooks.yaml"
        hooks.write_text(
            "endpoints:\n"
            f"  - {{name: erp, url: '{receiver.url}', secret: {secret}, "
            "events: [invoice.voided]}\n",
            encoding="utf-8",
        )
        settings = api_settings(make_settings, tmp_path, database_url).model_copy(
            update={"webhooks": hooks}
        )
        seed_ledger(settings)
        made = tokens(settings)
        number = number_of(settings.database_url, "org-0002", str(SEPTEMBER))
        with served_api(settings, tmp_path) as server, server.client(made.admin) as admin:
            voided = admin.post(f"/invoices/{number}/void", json={"reason": "wrong entity"})
            assert voided.status_code == 200, voided.text
            deadline = time.monotonic() + 60
            while not receiver.delivered() and time.monotonic() < deadline:
                time.sleep(0.1)  # delivered after the response, in the server's background
        [request] = receiver.delivered()
    assert verify_signature(secret, request.headers["billing-signature"], request.body)
    event = request.event
    assert event["type"] == "invoice.voided"
    assert event["data"]["number"] == number
    assert request.headers["billing-event-id"] == event["id"]
