"""Rating: a worked example by hand, half-up rounding, minimums, and exactness invariants."""

from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import load_rate_card
from billing.domain import TOTALS_FIELDS, MeterPrice, OrgAccount, RateCard, Tier, UsageRecord
from billing.rating import UsageAggregate, graduated_charge, rate_org, rate_period

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ratecards"
GIB = 2**30
HOUR_MS = 3_600_000


def record(key: str | None, user: str | None, **values: int | Decimal | None) -> UsageRecord:
    return UsageRecord(
        bucket_start=0, bucket_end=86400, org_id="org-a", api_key_id=key, user_id=user, **values
    )  # type: ignore[arg-type]


def standard_card() -> RateCard:
    return load_rate_card(EXAMPLES / "standard-2026-01.yaml")


def worked_example_usage() -> UsageAggregate:
    aggregate = UsageAggregate()
    aggregate.add_all(
        [
            # 1.5 h at 2 GiB = 3 GiB-h; 3 GiB in, 10 GiB out
            record(
                "k1",
                "u1",
                duration_ms=5_400_000,
                reserved_memory_mib=2048,
                workspace_bytes_in=3 * GIB,
                workspace_bytes_out=10 * GIB,
            ),
            # 10 h at 4 GiB = 40 GiB-h; 15 GiB out
            record(
                "k1",
                None,
                duration_ms=36_000_000,
                reserved_memory_mib=4096,
                workspace_bytes_out=15 * GIB,
            ),
            # 50 h at 2 GiB = 100 GiB-h; 1 GiB out, split over two buckets
            record(
                "k2",
                "u2",
                duration_ms=90_000_000,
                reserved_memory_mib=2048,
                workspace_bytes_out=GIB // 2,
            ),
            record(
                "k2",
                "u2",
                duration_ms=90_000_000,
                reserved_memory_mib=2048,
                workspace_bytes_out=GIB // 2,
            ),
        ]
    )
    return aggregate


def test_worked_example_by_hand() -> None:
    """The README's worked example.

    duration 61.5 h x 0.12 = 7.38; memory 143 GiB-h - 100 included = 43 x 0.0125 = 0.5375 -> 0.54;
    workspace in 3 GiB x 0.01 = 0.03; workspace out 26 GiB - 2 included = 24: 20 x 0.09 + 4 x 0.05
    = 2.00. Total 9.95, above the 5.00 minimum.
    """
    invoice = rate_org(
        OrgAccount("org-a", "A"), standard_card(), worked_example_usage().by_org["org-a"]
    )
    amounts = {charge.meter: charge.amount_minor for charge in invoice.charges}
    assert amounts == {"duration": 738, "memory": 54, "workspace_in": 3, "workspace_out": 200}
    assert invoice.total_minor == 995
    charges = {charge.meter: charge for charge in invoice.charges}
    assert charges["duration"].quantity == Fraction(123, 2)
    assert charges["memory"].billable == 43
    lines = {
        (line.key.api_key_id, line.key.user_id): line.amount_minor
        for line in charges["memory"].lines
    }
    # 54 cents by 3:40:100 -> 1, 15, 37 and the leftover cent to the largest remainder (k2).
    assert lines == {("k1", "u1"): 1, ("k1", None): 15, ("k2", "u2"): 38}
    duration_lines = [line.amount_minor for line in charges["duration"].lines]
    assert duration_lines == [18, 120, 600]
    out_lines = [line.amount_minor for line in charges["workspace_out"].lines]
    assert out_lines == [77, 115, 8]


def test_half_up_rounding_of_a_meter_charge() -> None:
    aggregate = UsageAggregate()
    aggregate.add(record("k", "u", workspace_bytes_in=5 * GIB // 2))  # 2.5 GiB x 0.01 = 0.025
    invoice = rate_org(OrgAccount("org-a", "A"), standard_card(), aggregate.by_org["org-a"])
    assert {c.meter: c.amount_minor for c in invoice.charges}["workspace_in"] == 3


def test_minimum_charge_tops_up_a_small_invoice() -> None:
    aggregate = UsageAggregate()
    aggregate.add(record("k", "u", duration_ms=HOUR_MS))  # 0.12
    invoice = rate_org(OrgAccount("org-a", "A"), standard_card(), aggregate.by_org["org-a"])
    top_up = invoice.charges[-1]
    assert top_up.meter == "minimum_charge"
    assert top_up.amount_minor == 500 - 12
    assert invoice.total_minor == 500
    assert [line.amount_minor for line in top_up.lines] == [488]


def test_memory_falls_back_to_peak_then_counts_missing() -> None:
    aggregate = UsageAggregate()
    aggregate.add(record("k", "u", duration_ms=HOUR_MS, peak_memory_mib=Decimal("512.5")))
    aggregate.add(record("k", "u", duration_ms=HOUR_MS))
    totals = aggregate.by_org["org-a"][("k", "u", None)]
    assert Fraction(totals[TOTALS_FIELDS.index("memory_mib_ms")]) == Fraction("512.5") * HOUR_MS
    assert aggregate.report.results_with_peak_only == 1
    assert aggregate.report.results_without_memory == 1


def test_unlisted_org_is_billed_on_the_default_card_and_reported() -> None:
    aggregate = worked_example_usage()
    card = standard_card()
    invoices = rate_period(
        aggregate, lambda org_id: OrgAccount(org_id, org_id, listed=False), lambda account: card
    )
    assert [invoice.org.org_id for invoice in invoices] == ["org-a"]
    assert aggregate.report.orgs_without_contact == ["org-a"]


def test_graduated_tiers_price_each_slice() -> None:
    tiers = (
        Tier(Decimal(10), Decimal(1)),
        Tier(Decimal(20), Decimal("0.5")),
        Tier(None, Decimal("0.1")),
    )
    assert graduated_charge(tiers, Fraction(5)) == 5
    assert graduated_charge(tiers, Fraction(15)) == Fraction(25, 2)
    assert graduated_charge(tiers, Fraction(30)) == 10 + 5 + 1


usage_rows = st.lists(
    st.tuples(
        st.sampled_from(["k1", "k2", "k3", None]),
        st.sampled_from(["u1", "u2", None]),
        st.integers(min_value=0, max_value=50 * HOUR_MS),
        st.sampled_from([256, 1024, 4096, None]),
        st.integers(min_value=0, max_value=40 * GIB),
        st.integers(min_value=0, max_value=40 * GIB),
    ),
    min_size=1,
    max_size=30,
)


def _aggregate(
    rows: list[tuple[str | None, str | None, int, int | None, int, int]],
) -> UsageAggregate:
    aggregate = UsageAggregate()
    for key, user, duration, reserved, bytes_in, bytes_out in rows:
        aggregate.add(
            record(
                key,
                user,
                duration_ms=duration,
                reserved_memory_mib=reserved,
                workspace_bytes_in=bytes_in,
                workspace_bytes_out=bytes_out,
            )
        )
    return aggregate


@settings(max_examples=150, deadline=None)
@given(rows=usage_rows)
def test_lines_sum_exactly_to_each_charge_and_the_total(
    rows: list[tuple[str | None, str | None, int, int | None, int, int]],
) -> None:
    invoice = rate_org(OrgAccount("org-a", "A"), standard_card(), _aggregate(rows).by_org["org-a"])
    for charge in invoice.charges:
        assert sum(line.amount_minor for line in charge.lines) == charge.amount_minor
        assert charge.amount_minor >= 0
    assert (
        sum(line.amount_minor for c in invoice.charges for line in c.lines) == invoice.total_minor
    )
    assert invoice.total_minor >= 500


def share_of(value: int, part: int, parts: int) -> int:
    """Part `part` of an integer split into `parts` integers that add up to it."""
    return value // parts + (1 if part < value % parts else 0)


@settings(max_examples=100, deadline=None)
@given(rows=usage_rows, split=st.integers(min_value=2, max_value=5))
def test_splitting_rows_into_more_buckets_never_changes_the_total(
    rows: list[tuple[str | None, str | None, int, int | None, int, int]], split: int
) -> None:
    card = standard_card()
    whole = rate_org(OrgAccount("org-a", "A"), card, _aggregate(rows).by_org["org-a"])
    pieces = []
    for key, user, duration, reserved, bytes_in, bytes_out in rows:
        for part in range(split):
            pieces.append(
                (
                    key,
                    user,
                    share_of(duration, part, split),
                    reserved,
                    share_of(bytes_in, part, split),
                    share_of(bytes_out, part, split),
                )
            )
    split_invoice = rate_org(OrgAccount("org-a", "A"), card, _aggregate(pieces).by_org["org-a"])
    assert split_invoice.total_minor == whole.total_minor
    assert [c.amount_minor for c in split_invoice.charges] == [
        c.amount_minor for c in whole.charges
    ]


@given(
    quantity=st.fractions(min_value=0, max_value=10**5, max_denominator=1000),
    more=st.fractions(min_value=0, max_value=10**3, max_denominator=1000),
)
def test_graduated_charge_is_non_decreasing(quantity: Fraction, more: Fraction) -> None:
    tiers = (Tier(Decimal(20), Decimal("0.09")), Tier(None, Decimal("0.05")))
    assert graduated_charge(tiers, quantity + more) >= graduated_charge(tiers, quantity)


def test_included_quantity_never_makes_a_charge_negative() -> None:
    card = RateCard(
        id="c",
        currency="USD",
        effective_from=date(2026, 1, 1),
        meters=(
            MeterPrice(
                "duration", "duration", "hour", unit_price=Decimal("1"), included=Decimal("1000")
            ),
        ),
    )
    aggregate = UsageAggregate()
    aggregate.add(record("k", "u", duration_ms=HOUR_MS))
    invoice = rate_org(OrgAccount("org-a", "A"), card, aggregate.by_org["org-a"])
    assert invoice.charges[0].billable == 0
    assert invoice.total_minor == 0
