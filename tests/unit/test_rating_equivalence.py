"""billing.rating (integer arithmetic) against the reference it replaced
(tests/support/rating_reference.py: Fractions throughout): the same invoices, charge by
charge and line by line, on random usage and random cards (tiers graduated and volume,
packages, included quantities, minimums and maximums, discounts, org minimums, session kinds,
memory figures missing or Decimal)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from functools import partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import rating
from billing.domain import MeterPrice, OrgAccount, RateCard, Tier, UsageRecord
from tests.support import rating_reference as reference

METER_UNITS = {
    "duration": "hour",
    "memory": "gib_hour",
    "peak_memory": "gib_hour",
    "workspace_in": "gib",
    "workspace_out": "gib",
    "sessions": "session",
    "requests": "request",
    "operations": "operation",
}


def exact_decimals(most: int, places: int = 4) -> st.SearchStrategy[Decimal]:
    """Non-negative Decimals with 0 to `places` places (as a card or the upstream writes them)."""
    return st.builds(
        lambda units, scale: Decimal(units).scaleb(-scale),
        st.integers(min_value=0, max_value=most * 10**places),
        st.integers(min_value=0, max_value=places),
    )


@st.composite
def tiers(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(set(draw(st.lists(exact_decimals(5_000, 2), min_size=0, max_size=3))))
    prices = draw(
        st.lists(exact_decimals(2, 4), min_size=len(bounds) + 1, max_size=len(bounds) + 1)
    )
    return (
        *(Tier(bound, price) for bound, price in zip(bounds, prices, strict=False)),
        Tier(None, prices[-1]),
    )


@st.composite
def prices(draw: st.DrawFn, name: str) -> MeterPrice:
    meter = draw(st.sampled_from(sorted(METER_UNITS)))
    model = draw(st.sampled_from(["unit", "graduated", "volume", "package"]))
    minimum = draw(st.none() | exact_decimals(20, 2))
    maximum = draw(st.none() | exact_decimals(5_000, 2))
    if minimum is not None and maximum is not None and maximum < minimum:
        minimum, maximum = maximum, minimum
    common = {
        "included": draw(exact_decimals(200, 3)),
        "minimum": minimum,
        "maximum": maximum,
        "session_kind": draw(st.sampled_from([None, None, "standard", "browser"])),
        "description": draw(st.sampled_from([None, "Custom"])),
    }
    if model == "unit":
        return MeterPrice(
            name, meter, METER_UNITS[meter], unit_price=draw(exact_decimals(3, 5)), **common
        )
    if model == "package":
        return MeterPrice(
            name,
            meter,
            METER_UNITS[meter],
            package_size=draw(exact_decimals(1_000, 2).filter(lambda size: size > 0)),
            package_price=draw(exact_decimals(50, 2)),
            **common,
        )
    return MeterPrice(
        name, meter, METER_UNITS[meter], tiers=draw(tiers()), tier_mode=model, **common
    )


@st.composite
def cards(draw: st.DrawFn) -> RateCard:
    count = draw(st.integers(min_value=1, max_value=5))
    return RateCard(
        id="random",
        currency=draw(st.sampled_from(["USD", "EUR", "JPY", "BHD"])),
        effective_from=date(2026, 1, 1),
        meters=tuple(draw(prices(f"charge-{index}")) for index in range(count)),
        minimum_charge=draw(st.none() | exact_decimals(50, 2)),
    )


@st.composite
def records(draw: st.DrawFn, session_kinds: bool) -> UsageRecord:
    return UsageRecord(
        bucket_start=0,
        bucket_end=86_400,
        org_id=draw(st.sampled_from(["org-a", "org-b", "org-c"])),
        api_key_id=draw(st.sampled_from(["k1", "k2", "k3", None])),
        user_id=draw(st.sampled_from(["u1", "u2", None])),
        duration_ms=draw(st.integers(min_value=0, max_value=80 * 3_600_000)),
        reserved_memory_mib=draw(st.sampled_from([None, 0, 256, 1024, 4096])),
        peak_memory_mib=draw(st.none() | exact_decimals(8_000, 3)),
        workspace_bytes_in=draw(st.integers(min_value=0, max_value=50 * 2**30)),
        workspace_bytes_out=draw(st.integers(min_value=0, max_value=50 * 2**30)),
        num_sessions=draw(st.integers(min_value=0, max_value=5_000)),
        request_count=draw(st.integers(min_value=0, max_value=20_000)),
        num_operations=draw(st.integers(min_value=0, max_value=20_000)),
        session_kind=draw(st.sampled_from(["standard", "browser"])) if session_kinds else None,
    )


@st.composite
def usage(draw: st.DrawFn) -> list[UsageRecord]:
    session_kinds = draw(st.booleans())
    return draw(st.lists(records(session_kinds), min_size=0, max_size=40))


accounts = st.builds(
    lambda discount, commitment: OrgAccount(
        "org", "Org", discount_percent=discount, minimum_commitment=commitment
    ),
    st.none() | st.sampled_from([Decimal(0), Decimal(10), Decimal("12.5"), Decimal("33.333")]),
    st.none() | exact_decimals(100, 2),
)


def outcome(call: Callable[[], object]) -> str:
    """The repr of what a call returns, or of the error it raises (the same either way)."""
    try:
        return repr(call())
    except Exception as error:
        return f"{type(error).__name__}: {error}"


def aggregated(rows: list[UsageRecord], chunks: int) -> tuple[rating.UsageAggregate, object]:
    """The rows summed by billing.rating (in `chunks` calls) and by the reference."""
    new = rating.UsageAggregate()
    size = max(1, -(-len(rows) // chunks))
    for start in range(0, len(rows), size):
        new.add_all(iter(rows[start : start + size]))
    old = reference.UsageAggregate()
    old.add_all(rows)
    return new, old


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=usage(), card=cards(), account=accounts, chunks=st.integers(1, 3))
def test_rating_equals_the_reference(
    rows: list[UsageRecord], card: RateCard, account: OrgAccount, chunks: int
) -> None:
    new, old = aggregated(rows, chunks)
    assert repr(new.report) == repr(old.report)
    assert sorted(new.by_org) == sorted(old.by_org)
    discount = account.discount_percent
    for org_id, totals in old.by_org.items():
        assert new.by_org[org_id] == totals
        org = OrgAccount(
            org_id, org_id, discount_percent=discount, minimum_commitment=account.minimum_commitment
        )
        assert outcome(partial(rating.rate_org, org, card, new.by_org[org_id])) == outcome(
            partial(reference.rate_org, org, card, totals)
        )
        for price in card.meters:
            assert outcome(
                partial(rating.rate_meter, price, totals, card.currency, discount_percent=discount)
            ) == outcome(
                partial(
                    reference.rate_meter, price, totals, card.currency, discount_percent=discount
                )
            )
