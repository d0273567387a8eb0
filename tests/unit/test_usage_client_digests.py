"""What makes two usage results the same result, or a contradiction, in one fetch; and the
records the client builds from a page, whichever decoder read it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from billing.domain import UsageRecord
from billing.errors import UsageContractError
from billing.usage import result_index
from billing.usage.client import FetchStats, UsageClient, UsageQuery

QUERY = UsageQuery(
    start_time=1_790_812_800,
    end_time=1_793_491_200,
    group_by=("org_id", "api_key_id", "user_id", "session_kind", "operation", "provider"),
)
DAY = 86_400


def bucket(day: int, results: list[str]) -> str:
    start = QUERY.start_time + day * DAY
    bounds = f'"start_time":{start},"end_time":{start + DAY}'
    return f'{{"object":"bucket",{bounds},"results":[{",".join(results)}]}}'


def body(buckets: list[str], next_page: str | None = None) -> bytes:
    more = "true" if next_page else "false"
    cursor = f'"{next_page}"' if next_page else "null"
    joined = ",".join(buckets)
    return f'{{"object":"page","data":[{joined}],"has_more":{more},"next_page":{cursor}}}'.encode()


def fetch(*pages: list[str]) -> tuple[list[list[UsageRecord]], FetchStats]:
    """The records of each page of a fetch whose pages hold these buckets, and its stats."""
    bodies = {
        None if number == 0 else f"p{number}": body(
            buckets, f"p{number + 1}" if number + 1 < len(pages) else None
        )
        for number, buckets in enumerate(pages)
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bodies[request.url.params.get("page")])

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = UsageClient(http, "https://mka1.test", SecretStr("k"), max_attempts=1)
    records = [page.records for page in client.iter_pages(QUERY)]
    return records, client.stats


def result(**fields: Any) -> str:
    values = {"org_id": '"org-1"', "api_key_id": '"k"', **fields}
    return "{" + ",".join(f'"{name}":{value}' for name, value in values.items()) + "}"


@pytest.mark.parametrize(
    ("field", "first", "again"),
    [
        ("peak_memory_mib", "1.5", "1.50"),
        ("peak_memory_mib", "1E+2", "100"),
        ("peak_memory_mib", "0.0", "-0.0"),
        ("duration_ms", str(2**70), str(2**70 + 1)),
    ],
)
def test_values_that_differ_only_in_their_text_are_a_contradiction(
    field: str, first: str, again: str
) -> None:
    """As in the upstream's JSON: a Decimal's digits count, and integers of any size."""
    original = [bucket(0, [result(**{field: first})])]
    with pytest.raises(UsageContractError, match="came twice with different values"):
        fetch(original, [bucket(0, [result(**{field: again})])])
    _, stats = fetch(original, original)
    assert stats.duplicate_results == 1


def test_results_differing_in_any_dimension_or_bucket_are_distinct() -> None:
    same = {"duration_ms": "5"}
    variants = [
        result(**same),
        result(api_key_id="null", **same),
        result(api_key_id='"null"', **same),
        result(api_key_id='""', **same),
        result(user_id='"u"', **same),
        result(user_id='"None"', **same),
        result(session_kind='"browser"', **same),
        result(operation='"turn"', **same),
        result(provider='"p"', **same),
        result(provider='"p\\"q"', **same),
        result(org_id='"org-1\\u0000"', **same),
    ]
    pages, stats = fetch([bucket(0, variants), bucket(1, variants[:1])])
    assert len(pages[0]) == len(variants) + 1
    assert stats == FetchStats(pages=1, results=len(variants) + 1, duplicate_results=0)
    replayed, stats = fetch([bucket(0, variants)], [bucket(0, variants[::-1])])
    assert [len(records) for records in replayed] == [len(variants), 0]
    assert stats.duplicate_results == len(variants)


def test_duplicates_and_contradictions_are_found_once_results_are_on_disk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(result_index, "SPILL_AFTER", 2)
    first = [bucket(day, [result(duration_ms=str(day))]) for day in range(5)]
    pages, stats = fetch(first, first[3:] + first[:1], [bucket(9, [result()])])
    assert [len(records) for records in pages] == [5, 0, 1]
    assert stats == FetchStats(pages=3, results=6, duplicate_results=3)
    changed = [bucket(1, [result(duration_ms="7")])]
    with pytest.raises(UsageContractError, match=r"page 2: .* came twice with different values"):
        fetch(first, changed)


def test_records_carry_every_field_and_their_bucket_whichever_decoder_read_the_page() -> None:
    full = result(
        user_id='"u"',
        duration_ms="1",
        reserved_memory_mib="512",
        peak_memory_mib="1.50",
        workspace_bytes_in="2",
        workspace_bytes_out="3",
        num_sessions="4",
        request_count="5",
        num_operations="6",
        files_changed_count="7",
        oom_killed_count="8",
        session_kind='"browser"',
        operation='"turn"',
        provider='"p"',
    )
    expected = UsageRecord(
        QUERY.start_time + DAY,
        QUERY.start_time + 2 * DAY,
        "org-1",
        "k",
        "u",
        duration_ms=1,
        reserved_memory_mib=512,
        peak_memory_mib=Decimal("1.50"),
        workspace_bytes_in=2,
        workspace_bytes_out=3,
        num_sessions=4,
        request_count=5,
        num_operations=6,
        files_changed_count=7,
        oom_killed_count=8,
        session_kind="browser",
    )
    # msgspec reads the first; NaN in a field the contract ignores sends the second to pydantic;
    # the client's own names for the bucket bounds are not read from the upstream.
    slow = full[:-1] + ',"extra":[NaN]}'
    bounds_given = full[:-1] + ',"__billing_bucket_start__":5}'
    bounds_odd = full[:-1] + ',"__billing_bucket_end__":"x"}'
    for variant in (full, slow, bounds_given, bounds_odd):
        [[record]], _ = fetch([bucket(1, [variant])])
        assert record == expected
        assert repr(record.peak_memory_mib) == "Decimal('1.50')"
        assert type(record) is UsageRecord


def test_results_before_one_without_an_org_are_classified_first() -> None:
    earlier = [result(duration_ms="1"), result(duration_ms="2")]
    with pytest.raises(UsageContractError, match="came twice with different values"):
        fetch([bucket(0, earlier), bucket(1, [result(org_id="null")])])
    with pytest.raises(UsageContractError, match=r"field data\.1\.results\.1\.org_id: missing"):
        fetch([bucket(0, earlier[:1]), bucket(1, [result(), result(org_id='""'), result()])])
