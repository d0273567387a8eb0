"""The usage emulator: deterministic synthetic data, consistent groupings, the HTTP contract."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billing.usage.emulator import (
    METRICS,
    USAGE_PATH,
    EmulatorReply,
    SyntheticUsage,
    UsageEmulator,
    encode_json,
    running_emulator,
    serve_emulator,
)
from billing.usage.faults import FaultPlan, PageFault, parse_fault

DAY = 86_400
HOUR = 3_600
START = 1_767_225_600  # 2026-01-01T00:00:00Z, a Thursday
FINEST = ("org_id", "api_key_id", "user_id")
AUTH = {"Authorization": "Bearer test-token"}


def all_results(buckets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [result for bucket in buckets for result in bucket["results"]]


def sums_by(results: list[dict[str, Any]], key: str, metric: str) -> Counter[str | None]:
    sums: Counter[str | None] = Counter()
    for result in results:
        sums[result[key]] += result[metric]
    return sums


def usage_query(**params: Any) -> dict[str, list[str]]:
    """A parsed query string, as the HTTP handler passes it to `handle`."""
    return {
        name: [str(v) for v in value] if isinstance(value, list) else [str(value)]
        for name, value in params.items()
    }


def fetch_all_pages(client: httpx.Client, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    page: str | None = None
    while True:
        response = client.get(USAGE_PATH, params={**params, **({"page": page} if page else {})})
        assert response.status_code == 200, response.text
        body = json.loads(response.text, parse_float=Decimal)
        yield body
        if not body["has_more"]:
            return
        page = body["next_page"]


# --------------------------------------------------------------------------- data


def test_org_ids_are_zero_padded() -> None:
    assert SyntheticUsage(3, seed=1).org_ids() == ["org-0001", "org-0002", "org-0003"]


def test_same_seed_gives_identical_json_and_another_seed_differs() -> None:
    def as_json(seed: int) -> bytes:
        return encode_json(SyntheticUsage(6, seed).results(START, START + 3 * DAY, "1d", [], None))

    assert as_json(5) == as_json(5)
    assert as_json(5) != as_json(6)


def test_a_day_does_not_depend_on_the_requested_window() -> None:
    usage = SyntheticUsage(4, seed=3)
    wide = usage.results(START, START + 5 * DAY, "1d", FINEST, None)
    narrow = usage.results(START + 2 * DAY, START + 3 * DAY, "1d", FINEST, None)
    assert wide[2] == narrow[0]


def test_buckets_cover_the_window_including_empty_ones() -> None:
    buckets = SyntheticUsage(3, seed=1).results(START, START + 3 * DAY, "1d", [], ["org-9999"])
    assert [(b["start_time"], b["end_time"], b["results"]) for b in buckets] == [
        (START + n * DAY, START + (n + 1) * DAY, []) for n in range(3)
    ]
    assert {b["object"] for b in buckets} == {"bucket"}


def test_a_partial_window_snaps_to_whole_utc_buckets_as_the_sdk_documents() -> None:
    usage = SyntheticUsage(3, seed=2)
    start, end = START + 6 * HOUR + 90, START + DAY + 5 * HOUR + 30
    days = usage.results(start, end, "1d", ["org_id"], None)
    assert [(b["start_time"], b["end_time"]) for b in days] == [
        (START, START + DAY),
        (START + DAY, START + 2 * DAY),
    ]
    assert days == usage.results(START, START + 2 * DAY, "1d", ["org_id"], None)
    hours = usage.results(start, end, "1h", ["org_id"], None)
    assert (hours[0]["start_time"], hours[-1]["end_time"]) == (
        START + 6 * HOUR,
        START + DAY + 6 * HOUR,
    )
    assert hours == usage.results(START + 6 * HOUR, START + DAY + 6 * HOUR, "1h", ["org_id"], None)
    minutes = usage.results(start, START + 6 * HOUR + 150, "1m", ["org_id"], None)
    assert [(b["start_time"], b["end_time"]) for b in minutes] == [
        (START + 6 * HOUR + 60, START + 6 * HOUR + 120),
        (START + 6 * HOUR + 120, START + 6 * HOUR + 180),
    ]


def test_finest_rows_average_five_to_fifteen_per_org_per_day() -> None:
    orgs, days = 30, 7
    usage = SyntheticUsage(orgs, seed=11)
    rows = all_results(usage.results(START, START + days * DAY, "1d", FINEST, None))
    assert 5 <= len(rows) / (orgs * days) <= 15
    assert len({(r["org_id"], r["api_key_id"], r["user_id"]) for r in rows}) > orgs


def test_org_sizes_are_heavy_tailed() -> None:
    usage = SyntheticUsage(50, seed=1)
    by_org = usage.results(START, START + 7 * DAY, "1d", ["org_id"], None)
    duration = sorted(sums_by(all_results(by_org), "org_id", "duration_ms").values(), reverse=True)
    top_tenth = sum(duration[:5]) / sum(duration)
    assert top_tenth > 0.3


def test_finest_row_fields_are_well_formed() -> None:
    usage = SyntheticUsage(20, seed=4)
    rows = all_results(usage.results(START, START + 7 * DAY, "1d", FINEST, None))
    for row in rows:
        assert row["object"] == "organization.usage.sandbox.result"
        assert all(type(row[m]) is int and row[m] >= 0 for m in METRICS)
        assert row["num_sessions"] >= 1
        assert row["duration_ms"] >= 60_000 * row["num_sessions"]
        assert row["api_key_id"].startswith(f"key-{row['org_id']}-")
        assert row["user_id"] is None or row["user_id"].startswith(f"user-{row['org_id']}-")
        assert row["reserved_memory_mib"] in (None, 256, 512, 1024, 2048, 4096, 8192)
        if row["reserved_memory_mib"] is not None:
            assert row["peak_memory_mib"] <= row["reserved_memory_mib"]
        assert row["operation"] is row["provider"] is row["session_kind"] is None
    assert any(row["user_id"] is None for row in rows)
    assert any(row["reserved_memory_mib"] is None and row["peak_memory_mib"] for row in rows)
    assert any(row["oom_killed_count"] > 0 for row in rows)


@pytest.mark.parametrize("group_by", [["org_id"], ["session_kind"], ["operation"], ["provider"]])
def test_any_grouping_sums_to_the_finest_rows(group_by: list[str]) -> None:
    usage = SyntheticUsage(8, seed=9)
    finest = all_results(usage.results(START, START + 3 * DAY, "1d", FINEST, None))
    grouped = all_results(usage.results(START, START + 3 * DAY, "1d", group_by, None))
    for metric in METRICS:
        assert sum(r[metric] for r in grouped) == sum(r[metric] for r in finest), metric
    assert max(r["peak_memory_mib"] or 0 for r in grouped) == max(
        r["peak_memory_mib"] or 0 for r in finest
    )
    [dimension] = group_by
    assert all(r[dimension] is not None for r in grouped)


def test_sums_by_org_equal_sums_of_finest_rows() -> None:
    usage = SyntheticUsage(10, seed=5)
    finest = all_results(usage.results(START, START + 4 * DAY, "1d", FINEST, None))
    by_org = all_results(usage.results(START, START + 4 * DAY, "1d", ["org_id"], None))
    assert [r["org_id"] for r in by_org if r["org_id"] == "org-0001"]
    for metric in ("duration_ms", "workspace_bytes_in", "workspace_bytes_out", "num_sessions"):
        assert sums_by(by_org, "org_id", metric) == sums_by(finest, "org_id", metric)


def test_reserved_memory_is_the_max_of_the_group() -> None:
    usage = SyntheticUsage(6, seed=5)
    finest = all_results(usage.results(START, START + DAY, "1d", FINEST, None))
    by_org = all_results(usage.results(START, START + DAY, "1d", ["org_id"], None))
    for org in by_org:
        reserved = [
            r["reserved_memory_mib"]
            for r in finest
            if r["org_id"] == org["org_id"] and r["reserved_memory_mib"] is not None
        ]
        assert org["reserved_memory_mib"] == (max(reserved) if reserved else None)


def test_hours_sum_to_days_and_minutes_to_hours() -> None:
    usage = SyntheticUsage(4, seed=8)
    days = usage.results(START, START + 2 * DAY, "1d", ["org_id", "operation"], None)
    hours = usage.results(START, START + 2 * DAY, "1h", ["org_id", "operation"], None)
    assert len(hours) == 48
    for day in days:
        in_day = [h for h in hours if day["start_time"] <= h["start_time"] < day["end_time"]]
        for metric in METRICS:
            day_sums = sums_by(day["results"], "org_id", metric)
            assert day_sums == sums_by(all_results(in_day), "org_id", metric), metric
    busiest = max(hours[:24], key=lambda h: len(h["results"]))
    minutes = usage.results(
        busiest["start_time"], busiest["end_time"], "1m", ["org_id", "operation"], None
    )
    assert len(minutes) == 60
    for metric in METRICS:
        assert sums_by(all_results(minutes), "org_id", metric) == sums_by(
            busiest["results"], "org_id", metric
        )


def test_results_are_sorted_by_group_key() -> None:
    usage = SyntheticUsage(6, seed=2)
    for bucket in usage.results(START, START + 2 * DAY, "1d", ["org_id", "user_id"], None):
        keys = [(r["org_id"], r["user_id"] is None, r["user_id"] or "") for r in bucket["results"]]
        assert keys == sorted(keys)


def test_org_filter_restricts_orgs() -> None:
    usage = SyntheticUsage(6, seed=2)
    results = all_results(
        usage.results(START, START + DAY, "1d", ["org_id"], ["org-0002", "org-0005"])
    )
    assert {r["org_id"] for r in results} == {"org-0002", "org-0005"}


def decimal_places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def test_peak_memory_is_an_exact_decimal_in_the_json_text() -> None:
    buckets = SyntheticUsage(10, seed=6).results(START, START + 2 * DAY, "1d", FINEST, None)
    generated = [r["peak_memory_mib"] for r in all_results(buckets)]
    parsed = [
        r["peak_memory_mib"]
        for r in all_results(json.loads(encode_json(buckets), parse_float=Decimal))
    ]
    assert parsed == generated
    peaks = [peak for peak in parsed if peak is not None]
    assert peaks
    assert all(isinstance(peak, Decimal) and decimal_places(peak) <= 3 for peak in peaks)
    assert any(decimal_places(peak) == 3 for peak in peaks)
    assert b'peak_memory_mib":"' not in encode_json(buckets)


# --------------------------------------------------------------------------- handle()


def test_handle_requires_a_bearer_token_and_the_right_path() -> None:
    emulator = UsageEmulator(SyntheticUsage(2, seed=1), api_key="secret")
    query = usage_query(start_time=START, end_time=START + DAY)
    assert emulator.handle(USAGE_PATH, query, {}) == (401, {"detail": "Not authenticated"})
    assert emulator.handle(USAGE_PATH, query, {"authorization": "Bearer "})[0] == 401
    wrong = emulator.handle(USAGE_PATH, query, {"Authorization": "Bearer nope"})
    assert wrong == (401, {"detail": "Invalid API key"})
    assert emulator.handle(USAGE_PATH, query, {"authorization": "bearer secret"})[0] == 200
    assert emulator.handle("/api/v1/other", query, AUTH) == (404, {"detail": "Not Found"})


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"end_time": START + DAY}, "start_time"),
        ({"start_time": "soon"}, "start_time"),
        ({"start_time": START, "bucket_width": "1w"}, "bucket_width"),
        ({"start_time": START, "group_by": "org_id,model"}, "group_by"),
        ({"start_time": START, "end_time": START}, "end_time"),
        ({"start_time": START, "end_time": START + 70 * DAY, "bucket_width": "1m"}, "bucket_width"),
        ({"start_time": START, "page": "not-a-cursor"}, "page"),
        ({"start_time": START, "all_orgs": "maybe"}, "all_orgs"),
    ],
)
def test_invalid_queries_get_422_naming_the_field(params: dict[str, Any], field: str) -> None:
    emulator = UsageEmulator(SyntheticUsage(2, seed=1))
    status, body = emulator.handle(USAGE_PATH, usage_query(**params), AUTH)
    assert status == 422
    assert [error["loc"] for error in body["detail"]] == [["query", field]]


def test_missing_start_time_has_fastapi_shape() -> None:
    emulator = UsageEmulator(SyntheticUsage(2, seed=1))
    assert emulator.handle(USAGE_PATH, {}, AUTH) == (
        422,
        {"detail": [{"loc": ["query", "start_time"], "msg": "Field required", "type": "missing"}]},
    )


def test_group_by_may_be_repeated_or_comma_separated() -> None:
    emulator = UsageEmulator(SyntheticUsage(3, seed=1))
    repeated = usage_query(
        start_time=START, end_time=START + DAY, group_by=["org_id", "provider"], all_orgs="true"
    )
    commas = usage_query(start_time=START, end_time=START + DAY, group_by="provider, org_id")
    assert emulator.handle(USAGE_PATH, repeated, AUTH) == emulator.handle(USAGE_PATH, commas, AUTH)


def test_a_cursor_from_one_query_is_rejected_for_another() -> None:
    emulator = UsageEmulator(SyntheticUsage(3, seed=1), page_size=2)
    query = usage_query(start_time=START, end_time=START + DAY, group_by="org_id,api_key_id")
    status, first = emulator.handle(USAGE_PATH, query, AUTH)
    assert status == 200
    assert first["has_more"]
    same = emulator.handle(USAGE_PATH, {**query, "page": [first["next_page"]]}, AUTH)
    assert same[0] == 200
    other = usage_query(start_time=START, end_time=START + 2 * DAY, page=first["next_page"])
    status, body = emulator.handle(USAGE_PATH, other, AUTH)
    assert status == 422
    assert body["detail"][0]["loc"] == ["query", "page"]


# --------------------------------------------------------------------------- over HTTP


def test_pagination_over_http_matches_one_big_page() -> None:
    params = {
        "start_time": START,
        "end_time": START + 3 * DAY,
        "group_by": ["org_id", "api_key_id", "user_id"],
    }
    big = UsageEmulator(SyntheticUsage(5, seed=1), page_size=10**6)
    status, whole = big.handle(USAGE_PATH, usage_query(**params), AUTH)
    assert status == 200
    assert not whole["has_more"]
    assert whole["next_page"] is None
    expected = json.loads(encode_json(whole["data"]), parse_float=Decimal)

    with (
        running_emulator(orgs=5, seed=1, page_size=7) as base_url,
        httpx.Client(base_url=base_url, headers=AUTH) as client,
    ):
        pages = list(fetch_all_pages(client, params))

    assert len(pages) > 3
    assert all(sum(len(b["results"]) for b in page["data"]) <= 7 for page in pages)
    assert all(page["object"] == "page" for page in pages)
    collected: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for page in pages:
        for bucket in page["data"]:
            collected.setdefault((bucket["start_time"], bucket["end_time"]), []).extend(
                bucket["results"]
            )
    assert sum(len(page["data"]) for page in pages) > len(collected)  # buckets split over pages
    assert [
        {"object": "bucket", "start_time": start, "end_time": end, "results": results}
        for (start, end), results in collected.items()
    ] == expected


def test_pages_without_end_time_keep_the_end_of_the_first_page() -> None:
    before = int(time.time())
    params = {"start_time": before - 2 * DAY, "group_by": ",".join(FINEST)}
    with (
        running_emulator(orgs=2, seed=3, page_size=3) as base_url,
        httpx.Client(base_url=base_url, headers=AUTH) as client,
    ):
        pages = fetch_all_pages(client, params)
        first = next(pages)
        after_first = int(time.time())
        rest = list(pages)
    assert rest
    final_end = rest[-1]["data"][-1]["end_time"]
    assert final_end % DAY == 0  # "now" snapped up to the end of its UTC day
    assert before <= final_end <= after_first - after_first % DAY + DAY
    assert max(b["end_time"] for page in [first, *rest] for b in page["data"]) == final_end


def test_http_errors_are_json() -> None:
    with running_emulator(orgs=1, seed=1, api_key="secret") as base_url:
        unauthenticated = httpx.get(f"{base_url}{USAGE_PATH}", params={"start_time": START})
        wrong_key = httpx.get(f"{base_url}{USAGE_PATH}", params={"start_time": START}, headers=AUTH)
        missing_start = httpx.get(
            f"{base_url}{USAGE_PATH}", headers={"Authorization": "Bearer secret"}
        )
        bad_width = httpx.get(
            f"{base_url}{USAGE_PATH}",
            params={"start_time": START, "bucket_width": "1y"},
            headers={"Authorization": "Bearer secret"},
        )
        not_found = httpx.get(f"{base_url}/nope", headers={"Authorization": "Bearer secret"})
        posted = httpx.post(f"{base_url}{USAGE_PATH}", headers={"Authorization": "Bearer secret"})
    assert (unauthenticated.status_code, unauthenticated.json()) == (
        401,
        {"detail": "Not authenticated"},
    )
    assert (wrong_key.status_code, wrong_key.json()) == (401, {"detail": "Invalid API key"})
    assert missing_start.status_code == 422
    assert missing_start.json()["detail"][0]["loc"] == ["query", "start_time"]
    assert bad_width.status_code == 422
    assert bad_width.json()["detail"][0]["loc"] == ["query", "bucket_width"]
    assert (not_found.status_code, not_found.json()) == (404, {"detail": "Not Found"})
    assert posted.status_code == 405
    for response in (unauthenticated, missing_start, bad_width, not_found, posted):
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)


class BrokenEmulator(UsageEmulator):
    def handle(
        self, path: str, query: dict[str, list[str]], headers: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("boom")


def test_unexpected_errors_become_json_500() -> None:
    server = serve_emulator(BrokenEmulator(SyntheticUsage(1, seed=1)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.server_port}{USAGE_PATH}", headers=AUTH)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert (response.status_code, response.json()) == (500, {"detail": "Internal Server Error"})
    assert response.headers["content-type"] == "application/json"


# --------------------------------------------------------------------------- fault injection

MONTH = {"start_time": START, "end_time": START + 5 * DAY, "group_by": ",".join(FINEST)}


def faulty(*specs: str, retry_after: str = "2") -> UsageEmulator:
    plan = FaultPlan.from_specs(list(specs), retry_after=retry_after)
    return UsageEmulator(SyntheticUsage(3, seed=1), page_size=4, faults=plan)


def get(emulator: UsageEmulator, cursor: str | None = None) -> EmulatorReply:
    query = usage_query(**MONTH, **({"page": cursor} if cursor else {}))
    return emulator.respond(USAGE_PATH, query, AUTH)


def body_of(reply: EmulatorReply) -> dict[str, Any]:
    assert reply.status == 200
    assert reply.payload is not None
    parsed: dict[str, Any] = json.loads(reply.payload, parse_float=Decimal)
    return parsed


def test_fault_specs_parse_kind_page_and_times() -> None:
    assert parse_fault("503@2x3") == PageFault("503", 2, 3)
    assert parse_fault("drop@1") == PageFault("drop", 1, 1)
    assert parse_fault(" truncate@4x* ") == PageFault("truncate", 4, None)
    for bad, problem in [
        ("503", "expected KIND@PAGE"),
        ("teleport@2", "unknown kind 'teleport'"),
        ("503@0", "page must be 1 or more"),
        ("503@2x0", "times must be 1 or more"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_fault(bad)


def test_faults_follow_the_page_in_the_cursor_not_the_request_count() -> None:
    emulator = faulty("503@2x2", "429@2")
    first = body_of(get(emulator))
    to_page_2 = first["next_page"]
    answers = [get(emulator, to_page_2) for _ in range(4)]
    assert [reply.status for reply in answers] == [503, 503, 429, 200]
    assert dict(answers[0].headers) == {"Retry-After": "2"}
    assert body_of(get(emulator)) == first  # page 1 never had a fault
    assert emulator.faults_served() == 3


def test_fault_counters_are_exact_under_concurrent_requests() -> None:
    emulator = faulty("500@1x5")
    statuses: list[int] = []
    lock = threading.Lock()

    def request() -> None:
        status = get(emulator).status
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(statuses) == {500: 5, 200: 11}


def test_drop_and_truncate_spoil_the_answer_itself() -> None:
    emulator = faulty("drop@1", "truncate@1")
    assert get(emulator).payload is None
    cut = get(emulator)
    whole = get(emulator)
    assert cut.status == whole.status == 200
    assert cut.payload is not None
    assert whole.payload is not None
    assert whole.payload.startswith(cut.payload)
    assert len(cut.payload) < len(whole.payload)
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.payload)


def test_a_duplicated_page_repeats_its_data_then_goes_on() -> None:
    clean = faulty()
    pages = [body_of(get(clean))]
    pages.append(body_of(get(clean, pages[0]["next_page"])))
    emulator = faulty("duplicate-page@2")
    page_1 = body_of(get(emulator))
    page_2 = body_of(get(emulator, page_1["next_page"]))
    replay = body_of(get(emulator, page_2["next_page"]))
    assert page_2["data"] == replay["data"] == pages[1]["data"]
    assert page_2["next_page"] not in (page_1["next_page"], pages[1]["next_page"])
    assert replay["next_page"] == pages[1]["next_page"]


def test_a_repeated_cursor_points_back_at_the_page_before() -> None:
    emulator = faulty("repeat-cursor@3")
    page_1 = body_of(get(emulator))
    page_2 = body_of(get(emulator, page_1["next_page"]))
    page_3 = body_of(get(emulator, page_2["next_page"]))
    assert page_3["has_more"]
    assert page_3["next_page"] == page_1["next_page"]


def test_an_unknown_enum_value_lands_in_the_first_result_of_the_page() -> None:
    emulator = faulty("unknown-enum@1")
    spoiled = body_of(get(emulator))
    again = body_of(get(emulator))
    assert spoiled["data"][0]["results"][0]["session_kind"] == "quantum"
    assert again["data"][0]["results"][0]["session_kind"] is None
    assert spoiled["data"][0]["results"][1:] == again["data"][0]["results"][1:]


def test_latency_and_faults_are_served_over_http() -> None:
    plan = FaultPlan(latency_seconds=0.2, page_faults=(PageFault("503", 1, 1),))
    with (
        running_emulator(orgs=1, seed=1, faults=plan) as base_url,
        httpx.Client(base_url=base_url, headers=AUTH) as client,
    ):
        started = time.monotonic()
        unavailable = client.get(USAGE_PATH, params={"start_time": START})
        served = client.get(USAGE_PATH, params={"start_time": START, "end_time": START + DAY})
        elapsed = time.monotonic() - started
    assert (unavailable.status_code, unavailable.headers["Retry-After"]) == (503, "1")
    assert served.status_code == 200
    assert elapsed >= 0.4
