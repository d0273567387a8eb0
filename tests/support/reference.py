"""An independent reference of the rate-card rules, written plainly for tests to check against.

It reads raw usage JSON and the YAML files itself and shares no code with billing.rating.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

if TYPE_CHECKING:
    from billing.periods import BillingPeriod

MODEL_KEYS = ("unit_price", "tiers", "tier_mode", "package_size", "package_price")
PLACES = {"USD": 2, "EUR": 2, "JPY": 0, "BHD": 3}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def cards_need_session_kind(cards_dir: Path) -> bool:
    return any(
        "session_kind" in spec
        for path in cards_dir.glob("*.yaml")
        for spec in yaml.safe_load(path.read_text())["meters"].values()
    )


def fetch_raw_results(
    base_url: str,
    start: int,
    end: int,
    token: str = "test",  # noqa: S107
    *,
    by_session_kind: bool = False,
) -> list[dict[str, Any]]:
    """Every usage result of a window, following next_page as the `page` parameter."""
    group_by = "org_id,api_key_id,user_id" + (",session_kind" if by_session_kind else "")
    params = {
        "start_time": start,
        "end_time": end,
        "bucket_width": "1d",
        "group_by": group_by,
        "all_orgs": "true",
    }
    results: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            query = dict(params, **({"page": cursor} if cursor else {}))
            response = http.get("/api/v1/sandbox/usage", params=query, timeout=60)
            body = json.loads(response.content, parse_float=Decimal)
            for bucket in body["data"]:
                results.extend(bucket["results"])
            if not body["has_more"]:
                return results
            cursor = body["next_page"]


def _card(cards_dir: Path, card_id: str, first_day: date) -> dict[str, Any]:
    versions = [yaml.safe_load(p.read_text()) for p in cards_dir.glob("*.yaml")]
    applicable = [v for v in versions if v["id"] == card_id and v["effective_from"] <= first_day]
    return max(applicable, key=lambda v: v["effective_from"])


def _quantity(meter: str, r: dict[str, Any]) -> Fraction:
    hours = Fraction(r.get("duration_ms", 0), 3_600_000)
    reserved, peak = r.get("reserved_memory_mib"), r.get("peak_memory_mib")
    if meter == "duration":
        return hours
    if meter == "memory":
        mib = reserved if reserved is not None else peak
        return Fraction(mib) / 1024 * hours if mib is not None else Fraction(0)
    if meter == "peak_memory":
        mib = peak if peak is not None else reserved
        return Fraction(mib) / 1024 * hours if mib is not None else Fraction(0)
    if meter in ("workspace_in", "workspace_out"):
        return Fraction(r.get(f"workspace_bytes_{meter[10:]}", 0), 2**30)
    field = {
        "sessions": "num_sessions",
        "requests": "request_count",
        "operations": "num_operations",
    }
    return Fraction(r.get(field[meter], 0))


def _price(spec: dict[str, Any], billable: Fraction) -> Fraction:
    if "tiers" in spec:
        if spec.get("tier_mode") == "volume":
            for tier in spec["tiers"]:
                if tier["up_to"] is None or billable <= Fraction(Decimal(tier["up_to"])):
                    return billable * Fraction(Decimal(tier["unit_price"]))
        charge, lower = Fraction(0), Fraction(0)
        for tier in spec["tiers"]:
            upper = None if tier["up_to"] is None else Fraction(Decimal(tier["up_to"]))
            top = billable if upper is None else min(billable, upper)
            if top > lower:
                charge += (top - lower) * Fraction(Decimal(tier["unit_price"]))
            if upper is None:
                break
            lower = upper
        return charge
    if "package_size" in spec:
        packages = math.ceil(billable / Fraction(Decimal(spec["package_size"])))
        return packages * Fraction(Decimal(spec["package_price"]))
    return billable * Fraction(Decimal(spec["unit_price"]))


def _half_up(amount: Fraction, places: int) -> int:
    return math.floor(amount * 10**places + Fraction(1, 2))


def expected_totals(
    results: list[dict[str, Any]], cards_dir: Path, orgs_file: Path, first_day: date
) -> dict[str, Decimal]:
    """Invoice total per org, computed by hand from the rules in docs/RATING.md."""
    directory = yaml.safe_load(orgs_file.read_text())
    entries = {o["org_id"]: o for o in directory["orgs"]}
    rows_by_org: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        rows_by_org[r["org_id"]].append(r)
    totals = {}
    for org, rows in rows_by_org.items():
        entry = entries.get(org, {})
        card = _card(cards_dir, entry.get("rate_card") or directory["default_rate_card"], first_day)
        places = PLACES[card["currency"]]
        discount = Fraction(Decimal(entry.get("discount_percent", "0")))
        total_minor = 0
        for name, base in card["meters"].items():
            spec = dict(base)
            override = entry.get("overrides", {}).get(name, {})
            if any(key in override for key in MODEL_KEYS):
                spec = {k: v for k, v in spec.items() if k not in MODEL_KEYS}
            spec.update(override)
            meter = spec.get("meter", name)
            kind = spec.get("session_kind")
            quantity = sum(
                (
                    _quantity(meter, r)
                    for r in rows
                    if kind is None or r.get("session_kind") == kind
                ),
                Fraction(0),
            )
            billable = max(Fraction(0), quantity - Fraction(Decimal(spec.get("included", "0"))))
            charge = _price(spec, billable)
            if "minimum" in spec:
                charge = max(charge, Fraction(Decimal(spec["minimum"])))
            if "maximum" in spec:
                charge = min(charge, Fraction(Decimal(spec["maximum"])))
            total_minor += _half_up(charge * (100 - discount) / 100, places)
        minimum = entry.get("minimum_commitment", card.get("minimum_charge"))
        if minimum is not None:
            total_minor = max(total_minor, _half_up(Fraction(Decimal(minimum)), places))
        totals[org] = Decimal(total_minor).scaleb(-places)
    return totals


def reference_totals(base_url: str, period: BillingPeriod) -> dict[str, Decimal]:
    """The total per org of a period's usage on the emulator at `base_url`, by hand from the
    example rate cards and org directory (examples/)."""
    raw = fetch_raw_results(
        base_url,
        period.start_unix,
        period.end_unix,
        by_session_kind=cards_need_session_kind(EXAMPLES / "ratecards"),
    )
    return expected_totals(raw, EXAMPLES / "ratecards", EXAMPLES / "orgs.yaml", period.first_day)
