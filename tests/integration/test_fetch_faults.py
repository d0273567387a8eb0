"""Usage fetches over real HTTP from a misbehaving emulator: identical results or clear errors."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from billing.close.inline import close_period
from billing.close.publish import CloseResult
from billing.config import Settings
from billing.db.engine import normalise_url
from billing.domain import Statement, UsageRecord
from billing.errors import UpstreamUnavailable, UsageContractError
from billing.periods import BillingPeriod
from billing.usage import result_index
from billing.usage.client import FetchStats, UsageClient, UsageQuery
from billing.usage.emulator import running_emulator
from billing.usage.faults import FaultKind, FaultPlan, PageFault

PERIOD = BillingPeriod.parse("2026-10")
QUERY = UsageQuery.for_period(PERIOD)
ORGS, SEED, PAGE_SIZE = 3, 5, 100
API_KEY = "sk-live-do-not-leak-4242"
FAST_BACKOFF: dict[str, Any] = {"initial_wait_seconds": 0.01, "max_wait_seconds": 0.05}


@dataclass(frozen=True)
class Fetched:
    """The multiset of records a fetch returned, the size of each page, and the client's stats."""

    records: Counter[UsageRecord]
    page_sizes: list[int]
    stats: FetchStats


def fetch(base_url: str, *, timeout: float = 5.0, **options: Any) -> Fetched:
    settings = {"max_attempts": 4, **FAST_BACKOFF, **options}
    with httpx.Client(timeout=timeout) as http:
        client = UsageClient(http, base_url, SecretStr(API_KEY), **settings)
        records: Counter[UsageRecord] = Counter()
        page_sizes = []
        for page in client.iter_pages(QUERY):
            records.update(page.records)
            page_sizes.append(len(page.records))
    return Fetched(records, page_sizes, client.stats)


def fetch_with(plan: FaultPlan, **options: Any) -> Fetched:
    with running_emulator(ORGS, SEED, page_size=PAGE_SIZE, faults=plan) as base_url:
        return fetch(base_url, **options)


def faults(*specs: tuple[FaultKind, int, int | None], retry_after: str = "0") -> FaultPlan:
    """A plan of (kind, page, times) faults; Retry-After 0 unless a test measures it."""
    page_faults = tuple(PageFault(kind, page, times) for kind, page, times in specs)
    return FaultPlan(retry_after=retry_after, page_faults=page_faults)


@pytest.fixture(scope="module")
def clean() -> Fetched:
    """The same emulator's data fetched without faults: the reference every recovery must hit."""
    fetched = fetch_with(FaultPlan())
    assert len(fetched.page_sizes) >= 5
    assert fetched.stats.retries == fetched.stats.duplicate_results == 0
    return fetched


# --------------------------------------------------------------------------- recoveries


@pytest.mark.parametrize(
    "kinds",
    [("503", "503", "drop"), ("429", "500", "drop"), ("drop", "drop", "503")],
    ids="-".join,
)
def test_three_transient_failures_in_a_row_recover_identically(
    clean: Fetched, kinds: tuple[FaultKind, ...]
) -> None:
    fetched = fetch_with(faults(*((kind, 2, 1) for kind in kinds)), max_attempts=4)
    assert fetched.records == clean.records
    assert fetched.stats.retries == 3
    assert fetched.stats.pages == len(clean.page_sizes)


def test_retry_after_is_waited_for(clean: Fetched) -> None:
    started = time.monotonic()
    fetched = fetch_with(faults(("429", 2, 1), retry_after="1"))
    assert time.monotonic() - started >= 1.0
    assert fetched.records == clean.records
    assert fetched.stats.retries == 1


def test_a_truncated_body_is_retried_like_a_transient_failure(clean: Fetched) -> None:
    fetched = fetch_with(faults(("truncate", 3, 1)))
    assert fetched.records == clean.records
    assert fetched.stats.retries == 1


def test_a_duplicated_page_is_billed_once_and_counted(clean: Fetched) -> None:
    fetched = fetch_with(faults(("duplicate-page", 2, 1)))
    assert fetched.records == clean.records
    assert fetched.stats.duplicate_results == clean.page_sizes[1] > 0
    assert fetched.page_sizes == [*clean.page_sizes[:2], 0, *clean.page_sizes[2:]]
    assert fetched.stats.results == clean.records.total()


def test_a_duplicated_page_is_found_with_the_result_index_on_disk(
    clean: Fetched, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(result_index, "SPILL_AFTER", 7)  # the originals are spilled by page 3
    fetched = fetch_with(faults(("duplicate-page", 2, 1)))
    assert fetched.records == clean.records
    assert fetched.stats.duplicate_results == clean.page_sizes[1] > 7
    assert fetched.stats.results == clean.records.total()


def test_latency_under_the_timeout_changes_nothing(clean: Fetched) -> None:
    fetched = fetch_with(FaultPlan(latency_seconds=0.05), timeout=2.0)
    assert fetched.records == clean.records
    assert fetched.stats.retries == 0


# --------------------------------------------------------------------------- clear failures


def test_a_page_that_keeps_failing_is_named_with_the_last_status() -> None:
    with pytest.raises(
        UpstreamUnavailable, match=r"^usage page 3: the MKA1 API failed 4 times \(last: HTTP 503\)"
    ):
        fetch_with(faults(("503", 3, None)), max_attempts=4)


def test_latency_over_the_timeout_is_a_read_timeout_naming_the_page() -> None:
    with pytest.raises(
        UpstreamUnavailable, match=r"^usage page 1: .* failed 2 times \(last: ReadTimeout"
    ):
        fetch_with(FaultPlan(latency_seconds=0.4), timeout=0.1, max_attempts=2)


def test_the_page_deadline_stops_retrying_early() -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as raised:
        fetch_with(
            faults(("503", 1, None), retry_after="1"), max_attempts=20, page_deadline_seconds=1.5
        )
    assert time.monotonic() - started < 3.0
    message = str(raised.value)
    assert message.startswith("usage page 1: the MKA1 API failed 2 times (last: HTTP 503)")
    assert "page deadline of 1.5 s ran out" in message


def test_a_body_truncated_every_time_names_the_page() -> None:
    with pytest.raises(UsageContractError, match=r"^usage page 2: the body is not valid JSON"):
        fetch_with(faults(("truncate", 2, None)))


@pytest.mark.parametrize(("fault_page", "error_page"), [(4, 4), (2, 3)])
def test_a_repeated_cursor_stops_the_fetch(fault_page: int, error_page: int) -> None:
    with pytest.raises(
        UsageContractError,
        match=rf"^usage page {error_page}: next_page repeats a cursor already followed",
    ):
        fetch_with(faults(("repeat-cursor", fault_page, None)))


def test_an_unknown_enum_value_names_the_page_and_field() -> None:
    with pytest.raises(
        UsageContractError,
        match=r"^usage page 3: field data\.0\.results\.0\.session_kind: .*\(got 'quantum'\)",
    ):
        fetch_with(faults(("unknown-enum", 3, 1)))


def test_the_api_key_is_never_logged_nor_in_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UpstreamUnavailable) as raised:
        fetch_with(faults(("503", 1, 1), ("drop", 1, 1), ("500", 1, None)), max_attempts=3)
    assert "attempt 2 failed (RemoteProtocolError" in caplog.text
    assert any(record.name.startswith("httpcore") for record in caplog.records)
    assert API_KEY not in caplog.text
    assert all(API_KEY not in repr(record.__dict__) for record in caplog.records)
    assert API_KEY not in str(raised.value)
    with httpx.Client() as http:
        assert API_KEY not in repr(UsageClient(http, "http://x.test", SecretStr(API_KEY)))


# --------------------------------------------------------------------------- through a close


def close_against(
    plan: FaultPlan, make_settings: Callable[..., Settings], tmp_path: Path, name: str
) -> CloseResult:
    with running_emulator(ORGS, SEED, page_size=PAGE_SIZE, faults=plan) as base_url:
        settings = make_settings(
            database_url=f"sqlite:///{tmp_path / f'{name}.db'}",
            output_dir=tmp_path / name,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr(API_KEY),
            mka1_max_attempts=4,
        )
        return close_period(settings, PERIOD)


def invoice_view(statements: list[Statement]) -> list[tuple[object, ...]]:
    return [(s.org_id, s.currency, s.total, s.charges, s.lines) for s in statements]


def test_a_close_that_recovers_bills_exactly_like_a_clean_close(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Three transient failures in a row on page 2, a replayed page 3 and a cut-off page 5.
    plan = faults(
        ("503", 2, 1), ("drop", 2, 1), ("429", 2, 1), ("duplicate-page", 3, 1), ("truncate", 5, 1)
    )
    recovered = close_against(plan, make_settings, tmp_path, "faulty")
    reference = close_against(FaultPlan(), make_settings, tmp_path, "clean")
    assert len(reference.statements) == ORGS
    assert invoice_view(recovered.statements) == invoice_view(reference.statements)
    assert recovered.report.usage_results == reference.report.usage_results
    assert recovered.pages_fetched == reference.pages_fetched + 1  # the replayed page


def test_a_close_that_fails_leaves_a_failed_run_and_no_invoices(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(UsageContractError, match=r"usage page 2: field .*session_kind"):
        close_against(faults(("unknown-enum", 2, 1)), make_settings, tmp_path, "failed")
    engine = create_engine(normalise_url(f"sqlite:///{tmp_path / 'failed.db'}"))
    with engine.connect() as connection:
        invoices = connection.execute(text("SELECT count(*) FROM invoice")).scalar_one()
        status, error = connection.execute(text("SELECT status, error FROM billing_run")).one()
    engine.dispose()
    assert invoices == 0
    assert status == "failed"
    assert "usage page 2" in error
