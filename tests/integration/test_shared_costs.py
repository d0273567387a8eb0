"""Shared costs through a real close: allocation.csv reconciles per currency to the period's
totals to the cent (plus the fixed overheads), and the REST API and the console show the same
rows and centre totals."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from html import unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from billing.close.inline import close_period
from billing.config import Settings
from billing.statements.allocation import ALLOCATION_COLUMNS, UNALLOCATED
from billing.states import Role
from billing.usage.emulator import running_emulator
from billing.web.app import create_app
from tests.support.api_data import SEPTEMBER, api_settings, tokens
from tests.support.console import add_console_users, console_session

CENTRES = """\
api_keys:
  key-org-0001-1: robotics-research
  key-org-0002-2: analytics-batch
users:
  user-org-0001-2: robotics-platform
  user-org-0003-1: initech-ml
orgs:
  org-0001: robotics-platform
  org-0002: analytics
  org-0003: initech
  org-0004: shared-services
shared:
  - name: batch
    from: {api_keys: [key-org-0002-2]}
    to: {method: fixed, percentages: {analytics: "70", initech-ml: "30"}}
  - name: platform-overhead
    from: {centre: shared-services}
    to: {method: weighted}
  - name: leftovers
    from: {centre: unallocated}
    to: {method: even, exclude: [initech]}
  - name: office-rent
    from: {amount: "2000.00", currency: USD}
    to: {method: even, centres: [analytics, initech-ml, robotics-research]}
  - name: eu-desk
    from: {amount: "333.33", currency: EUR}
    to: {method: weighted}
"""
OVERHEADS = {"USD": Decimal("2000.00"), "EUR": Decimal("333.33")}
# API fields and the allocation.csv columns they carry
FIELDS = {
    "cost_centre": "cost_centre",
    "org_id": "org_id",
    "org_name": "org_name",
    "invoice_number": "invoice_number",
    "api_key_id": "api_key_id",
    "user_id": "user_id",
    "currency": "currency",
    "amount": "billed_cost",
    "line_items": "line_items",
    "mapped_by": "mapped_by",
    "direct_cost": "direct_cost",
    "shared_cost": "shared_cost",
    "allocated_from": "allocated_from",
    "method": "method",
    "ratio": "ratio",
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> Settings:
    built = api_settings(make_settings, tmp_path, database_url)
    centres = tmp_path / "cost_centres.yaml"
    centres.write_text(CENTRES, encoding="utf-8")
    seeded = built.model_copy(update={"cost_centres": centres})
    add_console_users(seeded)
    return seeded


def totals_by(records: list[dict[str, str]], column: str) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for record in records:
        sums[record["currency"]] += Decimal(record[column])
    return dict(sums)


def centre_table(html: str) -> dict[tuple[str, str], Decimal]:
    """{(currency, cost centre): amount} of the console's by-cost-centre table."""
    table = html.split('id="by-cost-centre"')[1].split("<tfoot>")[0]
    return {
        (currency, unescape(key)): Decimal(amount)
        for currency, body in re.findall(r'<tbody data-currency="(\w+)">(.*?)</tbody>', table, re.S)
        for key, amount in re.findall(r'data-key="([^"]*)">.*?data-amount="([^"]+)"', body, re.S)
    }


def test_close_with_shared_rules_reconciles_and_the_api_and_console_agree(
    settings: Settings,
) -> None:
    with running_emulator(orgs=5, seed=5, page_size=200) as base_url:
        upstream = settings.model_copy(
            update={"mka1_base_url": base_url, "mka1_api_key": SecretStr("t")}
        )
        result = close_period(upstream, SEPTEMBER, trigger="test")
    text = (result.folder / "allocation.csv").read_text(encoding="utf-8")
    records = list(csv.DictReader(io.StringIO(text)))
    assert tuple(records[0]) == ALLOCATION_COLUMNS

    invoiced: dict[str, Decimal] = defaultdict(Decimal)
    per_org: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in result.invoices:
        invoiced[invoice.currency] += invoice.total
        per_org[invoice.org_id] = invoice.total
    assert len(invoiced) == 2  # USD and EUR
    # billed_cost per currency: the period's totals plus the fixed overheads, to the cent
    expected = {c: invoiced[c] + OVERHEADS[c] for c in invoiced}
    assert totals_by(records, "billed_cost") == expected
    assert totals_by(records, "direct_cost") == dict(invoiced)
    assert totals_by(records, "shared_cost") == OVERHEADS
    for record in records:
        assert Decimal(record["billed_cost"]) == Decimal(record["direct_cost"]) + Decimal(
            record["shared_cost"]
        )
    # every org's rows (its own and the shares made of its cost) still add up to its invoice
    org_sums: dict[str, Decimal] = defaultdict(Decimal)
    for record in records:
        if record["org_id"]:
            org_sums[record["org_id"]] += Decimal(record["billed_cost"])
    assert org_sums == per_org
    # each rule gives out exactly what it took
    taken: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    given: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for record in records:
        if not record["allocated_from"]:
            continue
        key = (record["allocated_from"], record["currency"])
        if record["mapped_by"] == "shared":
            given[key] += Decimal(record["shared_cost"])
        else:
            taken[key] -= Decimal(record["shared_cost"])
    taken[("office-rent", "USD")] = OVERHEADS["USD"]
    taken[("eu-desk", "EUR")] = OVERHEADS["EUR"]
    assert given == taken
    assert {rule for rule, _ in given} >= {"platform-overhead", "office-rent", "eu-desk"}
    shared_out = [r for r in records if r["cost_centre"] in ("shared-services", UNALLOCATED)]
    assert all(Decimal(r["billed_cost"]) == 0 for r in shared_out if r["mapped_by"] != "shared")
    rent = [r for r in records if r["allocated_from"] == "office-rent"]
    assert {(r["org_id"], r["invoice_number"], r["AllocatedMethodId"]) for r in rent} == {
        ("", "", "even")
    }

    made = tokens(settings)
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        answer = client.get(
            f"/api/v1/periods/{SEPTEMBER}/allocation",
            headers={"Authorization": f"Bearer {made.viewer}"},
        )
    assert answer.status_code == 200
    body = answer.json()
    api_rows = [
        {column: "" if row[field] is None else str(row[field]) for field, column in FIELDS.items()}
        for row in body["rows"]
    ]
    assert api_rows == [{column: r[column] for column in FIELDS.values()} for r in records]
    assert {c: Decimal(t) for c, t in body["totals"].items()} == expected

    with console_session(settings, Role.VIEWER) as viewer:
        page = viewer.client.get(f"/periods/{SEPTEMBER}/allocation")
    assert page.status_code == 200
    by_centre: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for record in records:
        by_centre[(record["currency"], record["cost_centre"])] += Decimal(record["billed_cost"])
    assert centre_table(page.text) == by_centre
    assert 'id="by-shared-rule"' in page.text
    assert "office-rent → analytics" in page.text
