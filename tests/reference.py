"""An independent reference of the rate-card rules, written plainly for tests to check against.

It reads raw usage JSON and the YAML cards itself and shares no code with billing.rating.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import yaml


def fetch_raw_results(
    base_url: str,
    start: int,
    end: int,
    token: str = "test",  # noqa: S107
) -> list[dict[str, Any]]:
    """Every usage result of a window, following next_page as the `page` parameter."""
    params = {
        "start_time": start,
        "end_time": end,
        "bucket_width": "1d",
        "group_by": "org_id,api_key_id,user_id",
        "all_orgs": "true",
    }
    results: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            query = dict(params, **({"page": cursor} if cursor else {}))
            body = json.loads(
                http.get("/api/v1/sandbox/usage", params=query).content, parse_float=Decimal
            )
            for bucket in body["data"]:
                results.extend(bucket["results"])
            if not body["has_more"]:
                return results
            cursor = body["next_page"]


def _card(cards_dir: Path, card_id: str, first_day: date) -> dict[str, Any]:
    versions = [yaml.safe_load(p.read_text()) for p in cards_dir.glob("*.yaml")]
    applicable = [v for v in versions if v["id"] == card_id and v["effective_from"] <= first_day]
    return max(applicable, key=lambda v: v["effective_from"])


def _half_up_cents(amount: Fraction, places: int) -> int:
    scaled = amount * 10**places
    return int((scaled + Fraction(1, 2)).__floor__())


def expected_totals(
    results: list[dict[str, Any]], cards_dir: Path, orgs_file: Path, first_day: date
) -> dict[str, Decimal]:
    """Invoice total per org, computed by hand from the rules in the README."""
    directory = yaml.safe_load(orgs_file.read_text())
    card_of = {o["org_id"]: o.get("rate_card") for o in directory["orgs"]}
    places = {"USD": 2, "EUR": 2, "JPY": 0, "BHD": 3}
    sums: dict[str, dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    for r in results:
        s = sums[r["org_id"]]
        s["duration"] += Fraction(r.get("duration_ms", 0), 3_600_000)
        mib = r.get("reserved_memory_mib")
        if mib is None:
            mib = r.get("peak_memory_mib")
        if mib is not None:
            s["memory"] += Fraction(mib) / 1024 * Fraction(r.get("duration_ms", 0), 3_600_000)
        s["workspace_in"] += Fraction(r.get("workspace_bytes_in", 0), 2**30)
        s["workspace_out"] += Fraction(r.get("workspace_bytes_out", 0), 2**30)
    totals = {}
    for org, quantities in sums.items():
        card = _card(cards_dir, card_of.get(org) or directory["default_rate_card"], first_day)
        p = places[card["currency"]]
        total_minor = 0
        for meter, spec in card["meters"].items():
            billable = max(
                Fraction(0), quantities[meter] - Fraction(Decimal(spec.get("included", "0")))
            )
            if "tiers" in spec:
                charge, lower = Fraction(0), Fraction(0)
                for tier in spec["tiers"]:
                    upper = None if tier["up_to"] is None else Fraction(Decimal(tier["up_to"]))
                    top = billable if upper is None else min(billable, upper)
                    if top > lower:
                        charge += (top - lower) * Fraction(Decimal(tier["unit_price"]))
                    if upper is None:
                        break
                    lower = upper
            else:
                charge = billable * Fraction(Decimal(spec["unit_price"]))
            total_minor += _half_up_cents(charge, p)
        minimum = card.get("minimum_charge")
        if minimum is not None:
            total_minor = max(total_minor, _half_up_cents(Fraction(Decimal(minimum)), p))
        totals[org] = Decimal(total_minor).scaleb(-p)
    return totals
