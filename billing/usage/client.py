"""The MKA1 usage API over httpx: pagination, bounded retries, strict validation per page.

Pages stream one at a time; across a fetch the client keeps only the cursors it followed and a
digest per result (spilled to a temporary file beyond a bound, see result_index), so that a
repeated cursor stops the fetch and a replayed result is billed once (see FetchStats).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from itertools import repeat
from operator import attrgetter
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from msgspec.structs import astuple
from pydantic import SecretStr, ValidationError
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from billing.domain import UsageRecord
from billing.errors import (
    UpstreamAuthError,
    UpstreamRejected,
    UpstreamUnavailable,
    UsageContractError,
)
from billing.periods import BillingPeriod
from billing.usage.contract import GROUP_BY_DIMENSIONS, UsagePageModel
from billing.usage.fast_contract import (
    UsageBucket,
    UsagePageData,
    UsageResult,
    decode_page,
    page_from_model,
)
from billing.usage.result_index import KEY_BYTES, UNSIGNED_64, ResultIndex, ResultKind


@functools.cache
def tls_context() -> ssl.SSLContext:
    """This process's TLS settings for outgoing HTTPS, made once and shared by every client:
    httpx's own defaults (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), which cost
    about 20 ms to load each time a client is built with them."""
    return httpx.create_ssl_context()


log = logging.getLogger(__name__)

USAGE_PATH = "/api/v1/sandbox/usage"
MAX_PAGES = 100_000
BUCKET_SECONDS = {"1m": 60, "1h": 3_600, "1d": 86_400}
BUCKET_WIDTHS = tuple(BUCKET_SECONDS)
BILLING_GROUP_BY = ("org_id", "api_key_id", "user_id")
ECHOED_INPUT_CHARS = 80


@dataclass(frozen=True)
class UsageQuery:
    """The parameters of one usage fetch (a period, grouped for billing by default)."""

    start_time: int
    end_time: int
    bucket_width: str = "1d"
    group_by: tuple[str, ...] = BILLING_GROUP_BY
    all_orgs: bool = True
    org_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bucket_width not in BUCKET_WIDTHS:
            raise ValueError(
                f"usage query: bucket_width {self.bucket_width!r} is not one of "
                f"{', '.join(BUCKET_WIDTHS)}"
            )
        unknown = [name for name in self.group_by if name not in GROUP_BY_DIMENSIONS]
        if unknown:
            raise ValueError(
                f"usage query: group_by dimension {unknown[0]!r} is not one of "
                f"{', '.join(GROUP_BY_DIMENSIONS)}"
            )

    @classmethod
    def for_period(
        cls,
        period: BillingPeriod,
        org_ids: tuple[str, ...] = (),
        extra_group_by: tuple[str, ...] = (),
    ) -> UsageQuery:
        """The billing query of a period; `extra_group_by` adds dimensions (e.g. session_kind)."""
        group_by = BILLING_GROUP_BY + tuple(
            name for name in dict.fromkeys(extra_group_by) if name not in BILLING_GROUP_BY
        )
        return cls(
            start_time=period.start_unix,
            end_time=period.end_unix,
            group_by=group_by,
            org_ids=org_ids,
        )

    def snapped_range(self) -> tuple[int, int]:
        """What the upstream answers for: the range widened to whole UTC buckets.

        The MKA1 API snaps `start_time` down and `end_time` up to the bucket width, so the
        first and last buckets may extend beyond the requested range. A calendar month is whole
        days, hours and minutes in UTC, so a period's range is its own snapped range.
        """
        width = BUCKET_SECONDS[self.bucket_width]
        return self.start_time - self.start_time % width, self.end_time + -self.end_time % width

    def params(self) -> dict[str, str]:
        params = {
            "start_time": str(self.start_time),
            "end_time": str(self.end_time),
            "bucket_width": self.bucket_width,
            "group_by": ",".join(self.group_by),
            "all_orgs": "true" if self.all_orgs else "false",
        }
        if self.org_ids:
            params["org_ids"] = ",".join(self.org_ids)
        return params


@dataclass(frozen=True)
class UsagePage:
    """One validated page: its number (1-based), its results, and the SHA-256 of its body."""

    number: int
    records: list[UsageRecord]
    body_sha256: str = ""


@dataclass
class FetchStats:
    """What the latest fetch saw.

    `results` are the results kept; `duplicate_results` were identical replays of results
    already fetched (dropped, so never billed twice); `retries` are attempts that failed
    transiently and were retried. A result whose key comes back with other values stops the
    fetch: which of the two to bill is not ours to guess.
    """

    pages: int = 0
    results: int = 0
    duplicate_results: int = 0
    retries: int = 0


class _Transient(Exception):
    """A failure worth another attempt (connect error, timeout, 429, 5xx, a cut-off body)."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float = 0.0,  # float-ok: seconds
        unreadable_body: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.unreadable_body = unreadable_body


class UsageClient:
    """Fetches usage pages from the MKA1 API; the httpx.Client is injected (its transport too).

    Per-request timeouts are the httpx.Client's; `page_deadline_seconds` bounds all attempts of
    one page together. Transient failures (transport errors, 429, 5xx, a body that is not JSON)
    are retried up to `max_attempts` times with exponential backoff and jitter, waiting at least
    the server's Retry-After (capped at `max_retry_after_seconds`) on 429 and 503.
    """

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        api_key: SecretStr | None,
        *,
        on_behalf_of: str | None = None,
        max_attempts: int = 5,
        initial_wait_seconds: float = 0.2,
        max_wait_seconds: float = 8.0,
        max_retry_after_seconds: float = 60.0,
        page_deadline_seconds: float = 120.0,
        max_pages: int = MAX_PAGES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._on_behalf_of = on_behalf_of
        self._max_attempts = max_attempts
        self._backoff = wait_exponential_jitter(
            multiplier=initial_wait_seconds, max=max_wait_seconds, jitter=initial_wait_seconds
        )
        self._max_retry_after_seconds = max_retry_after_seconds
        self._page_deadline_seconds = page_deadline_seconds
        self._max_pages = max_pages
        self._clock = clock
        self._sleep = sleep
        self.stats = FetchStats()

    def __repr__(self) -> str:
        return f"UsageClient(base_url={self._base_url!r}, api_key=***)"

    def iter_pages(self, query: UsageQuery) -> Iterator[UsagePage]:
        """Yield validated pages in order until the upstream says there are no more.

        Results already fetched (a replayed page) are dropped and counted in `stats`.
        """
        self.stats = FetchStats()
        index = ResultIndex()
        seen_cursors: set[str] = set()
        url = self._base_url + USAGE_PATH
        params: dict[str, str] | None = query.params()
        try:
            for number in range(1, self._max_pages + 1):
                body, digest = self._get_with_retries(url, params, number)
                page = self._validate(body, number, query)
                yield UsagePage(number, self._new_records_page(page, number, index), digest)
                if not page.has_more:
                    return
                cursor = self._next_cursor(page, number, seen_cursors)
                url, params = self._next_request(query, cursor, number)
        finally:
            index.close()
        raise UsageContractError(
            f"usage page {self._max_pages}: the upstream still has more after "
            f"{self._max_pages} pages (the max_pages limit); the pagination may loop, report it"
        )

    def iter_records(self, query: UsageQuery) -> Iterator[UsageRecord]:
        for page in self.iter_pages(query):
            yield from page.records

    def _new_records_page(
        self, page: UsagePageData, number: int, index: ResultIndex
    ) -> list[UsageRecord]:
        records, keys, values, refusal = _page_records(page, number)
        kinds = index.classify_page(keys, values)
        if kinds.count("new") == len(kinds):
            kept, duplicates = records, 0
        else:
            kept, duplicates = self._kept_records(kinds, records, number)
        if refusal is not None:
            raise refusal
        self._count_page(number, len(kept), duplicates)
        return kept

    @staticmethod
    def _kept_records(
        kinds: list[ResultKind], records: list[UsageRecord], number: int
    ) -> tuple[list[UsageRecord], int]:
        """The new records and the number of duplicates; an error at the first conflict."""
        kept: list[UsageRecord] = []
        duplicates = 0
        for kind, record in zip(kinds, records, strict=True):
            if kind == "new":
                kept.append(record)
            elif kind == "duplicate":
                duplicates += 1
            else:
                raise UsageContractError(
                    f"usage page {number}: the usage of org {record.org_id}, API key "
                    f"{record.api_key_id}, user {record.user_id} for the bucket starting "
                    f"{record.bucket_start} came twice with different values; the upstream "
                    "contradicts itself, retry the close later or report it"
                )
        return kept, duplicates

    def _count_page(self, number: int, kept: int, duplicates: int) -> None:
        self.stats.pages += 1
        self.stats.results += kept
        self.stats.duplicate_results += duplicates
        if duplicates:
            log.warning(
                "usage page %d: dropped %d results identical to results already fetched "
                "(a replayed page); each is billed once",
                number,
                duplicates,
            )

    def _next_cursor(self, page: UsagePageData, number: int, seen: set[str]) -> str:
        cursor = page.next_page
        if not cursor:
            raise UsageContractError(
                f"usage page {number}: has_more is true but next_page is empty; "
                "the upstream pagination is broken, retry later or report it"
            )
        if cursor in seen:
            raise UsageContractError(
                f"usage page {number}: next_page repeats a cursor already followed in this "
                "fetch, so the pagination would loop; retry later or report it"
            )
        seen.add(cursor)
        return cursor

    def _next_request(
        self, query: UsageQuery, cursor: str, number: int
    ) -> tuple[str, dict[str, str] | None]:
        if cursor.startswith(("http://", "https://")):
            if _origin(cursor) != _origin(self._base_url):
                raise UsageContractError(
                    f"usage page {number}: next_page points to another host ({_origin(cursor)}); "
                    "refusing to send the API key there"
                )
            return cursor, None
        return self._base_url + USAGE_PATH, {**query.params(), "page": cursor}

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        if self._on_behalf_of:
            headers["X-On-Behalf-Of"] = self._on_behalf_of
        return headers

    # ------------------------------------------------------------------ one page, with retries

    def _get_with_retries(
        self, url: str, params: dict[str, str] | None, number: int
    ) -> tuple[Any, str]:
        """The page's parsed JSON and body digest, retrying transient failures in the deadline."""
        deadline = self._clock() + self._page_deadline_seconds
        retrying = Retrying(
            stop=lambda state: self._should_stop(state, deadline),
            wait=self._wait_before_retry,
            retry=retry_if_exception_type(_Transient),
            before_sleep=lambda state: self._note_retry(state, number),
            sleep=self._sleep,
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._get_once(url, params, number, deadline)
        except RetryError as error:
            raise self._gave_up(error, number, deadline) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _should_stop(self, state: RetryCallState, deadline: float) -> bool:  # float-ok: seconds
        if state.attempt_number >= self._max_attempts:
            return True
        return self._clock() + state.upcoming_sleep >= deadline

    def _wait_before_retry(self, state: RetryCallState) -> float:  # float-ok: seconds
        """Exponential backoff with jitter, but never less than the server's Retry-After."""
        failure = state.outcome.exception() if state.outcome else None
        retry_after = failure.retry_after if isinstance(failure, _Transient) else 0.0
        return max(self._backoff(state), min(retry_after, self._max_retry_after_seconds))

    def _note_retry(self, state: RetryCallState, number: int) -> None:
        self.stats.retries += 1
        failure = state.outcome.exception() if state.outcome else None
        reason = failure.reason if isinstance(failure, _Transient) else repr(failure)
        log.warning(
            "usage page %d: attempt %d failed (%s); retrying in %.2f s",
            number,
            state.attempt_number,
            reason,
            state.upcoming_sleep,
        )

    def _gave_up(
        self,
        error: RetryError,
        number: int,
        deadline: float,  # float-ok: seconds
    ) -> Exception:
        last = error.last_attempt.exception()
        attempts = error.last_attempt.attempt_number
        reason = last.reason if isinstance(last, _Transient) else str(last)
        if isinstance(last, _Transient) and last.unreadable_body:
            return UsageContractError(
                f"usage page {number}: {reason} (after {attempts} attempts); "
                "the response may be truncated, retry the close"
            )
        out_of_time = attempts < self._max_attempts or self._clock() >= deadline
        deadline_note = (
            f" and the page deadline of {self._page_deadline_seconds:g} s ran out"
            if out_of_time
            else ""
        )
        return UpstreamUnavailable(
            f"usage page {number}: the MKA1 API failed {attempts} times (last: {reason})"
            f"{deadline_note}; check MKA1_BASE_URL and retry later"
        )

    def _get_once(
        self,
        url: str,
        params: dict[str, str] | None,
        number: int,
        deadline: float,  # float-ok: seconds
    ) -> tuple[Any, str]:
        try:
            response = self._http.get(
                url, params=params, headers=self._headers(), timeout=self._timeout(deadline)
            )
        except httpx.TransportError as error:
            raise _Transient(f"{type(error).__name__} from {_origin(url)}") from None
        _raise_for_status(response, number, self._redact)
        content = response.content
        parsed: Any = decode_page(content)
        if parsed is None:
            try:
                parsed = json.loads(content, parse_float=Decimal)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise _Transient(
                    f"the body is not valid JSON ({error})", unreadable_body=True
                ) from None
        return parsed, hashlib.sha256(content).hexdigest()

    def _timeout(self, deadline: float) -> httpx.Timeout:
        """The client's own timeouts, each cut to the time left before the page deadline."""
        left = max(deadline - self._clock(), 0.001)
        base = self._http.timeout
        return httpx.Timeout(
            connect=_at_most(base.connect, left),
            read=_at_most(base.read, left),
            write=_at_most(base.write, left),
            pool=_at_most(base.pool, left),
        )

    def _redact(self, text: str) -> str:
        """Upstream text with the API key blanked out, in case the upstream echoes it."""
        secret = self._api_key.get_secret_value() if self._api_key is not None else ""
        return text.replace(secret, "***") if secret else text

    # ------------------------------------------------------------------ validation

    def _validate(self, raw: Any, number: int, query: UsageQuery) -> UsagePageData:
        """The page read by the fast decoder, or else judged (and worded) by the contract."""
        page = raw if isinstance(raw, UsagePageData) else self._validate_strictly(raw, number)
        for bucket_index, bucket in enumerate(page.data):
            _check_bucket_in_query(bucket, bucket_index, number, query)
        return page

    def _validate_strictly(self, raw: Any, number: int) -> UsagePageData:
        try:
            model = UsagePageModel.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field_path = ".".join(str(part) for part in first["loc"])
            echoed = self._redact(_shorten(repr(first.get("input"))))
            raise UsageContractError(
                f"usage page {number}: field {field_path}: {first['msg']} (got {echoed})"
            ) from None
        return page_from_model(model)


def _raise_for_status(response: httpx.Response, number: int, redact: Callable[[str], str]) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = _retry_after_seconds(response) if status in (429, 503) else 0.0
        raise _Transient(f"HTTP {status}", retry_after=retry_after)
    if status in (401, 403):
        raise UpstreamAuthError(
            f"usage page {number}: the MKA1 API refused the API key (HTTP {status}); "
            "set MKA1_API_KEY to an admin key with the all_orgs scope"
        )
    if status == 422:
        raise UpstreamRejected(f"usage page {number}: HTTP 422: {redact(_detail(response))}")
    if status != 200:
        raise UpstreamRejected(
            f"usage page {number}: unexpected HTTP {status}: {redact(_detail(response))}"
        )


def _retry_after_seconds(response: httpx.Response) -> float:
    """Retry-After as seconds from now: delta seconds or an HTTP date; 0 when absent or bad."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)  # float-ok: seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _at_most(timeout: float | None, left: float) -> float:
    return left if timeout is None else min(timeout, left)


def _shorten(text: str, limit: int = ECHOED_INPUT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_bucket_in_query(
    bucket: UsageBucket, bucket_index: int, number: int, query: UsageQuery
) -> None:
    """A bucket must overlap the requested range and lie within its snapped range.

    So a first or last bucket may start before or end after the requested range by less than
    one bucket width (the upstream's calendar alignment); it is kept whole, as the upstream
    gives no finer split of it.
    """
    snapped_start, snapped_end = query.snapped_range()
    overlaps = bucket.start_time < query.end_time and bucket.end_time > query.start_time
    within = snapped_start <= bucket.start_time < bucket.end_time <= snapped_end
    if not (overlaps and within):
        raise UsageContractError(
            f"usage page {number}: field data.{bucket_index}: bucket "
            f"[{bucket.start_time}, {bucket.end_time}) lies outside the requested period "
            f"[{query.start_time}, {query.end_time}) (with {query.bucket_width} buckets "
            f"aligned in UTC: [{snapped_start}, {snapped_end})); the upstream answered for "
            "another range, report it"
        )


def _page_records(
    page: UsagePageData, number: int
) -> tuple[list[UsageRecord], list[bytes], list[int], UsageContractError | None]:
    """The page's results as records with their key and values digests, in order, up to the
    first result without an org (the error to raise once those before it are classified).

    Each step is one call or comprehension over a bucket's results (msgspec, map, hashlib),
    with no function of ours called per result."""
    records: list[UsageRecord] = []
    keys: list[bytes] = []
    values: list[int] = []
    for bucket_index, bucket in enumerate(page.data):
        results = bucket.results
        refusal = None
        if not all(map(_ORG_ID, results)):
            missing = next(at for at, result in enumerate(results) if not result.org_id)
            results = results[:missing]
            refusal = UsageContractError(
                f"usage page {number}: field data.{bucket_index}.results.{missing}.org_id: "
                "missing; the fetch must group by org_id"
            )
        start, end = bucket.start_time, bucket.end_time
        for result in results:
            result.bucket_start = start
            result.bucket_end = end
        keys += _key_digests(start, end, results)
        values += _values_digests(results)
        records += msgspec.convert(results, list[UsageRecord], from_attributes=True)
        if refusal is not None:
            return records, keys, values, refusal
    return records, keys, values, None


_ORG_ID = attrgetter("org_id")
_PEAK_MEMORY = attrgetter("peak_memory_mib")
_KEY_DIMENSIONS = attrgetter(
    "org_id", "api_key_id", "user_id", "session_kind", "operation", "provider"
)
_ENCODE = msgspec.json.Encoder().encode


def _key_digests(start: int, end: int, results: list[UsageResult]) -> list[bytes]:
    """What identifies each result within a fetch (its bucket and every grouping dimension), as
    a digest that a temporary file can hold: BLAKE2b of the JSON array
    [start, end, [org_id, api_key_id, user_id, session_kind, operation, provider]], one text
    per key (null apart from "null", every string quoted and escaped)."""
    keys = map(_ENCODE, zip(repeat(start), repeat(end), map(_KEY_DIMENSIONS, results)))
    return [hashlib.blake2b(key, digest_size=KEY_BYTES).digest() for key in keys]


def _values_digests(results: list[UsageResult]) -> list[int]:
    """A 64-bit digest of every value of each result, to tell a replay from a contradiction.

    Python's own hash of the values (salted per process for text: the index lives for one fetch,
    in one process), with the text of the Decimal beside them, so that 1.5 and 1.50 differ as
    they did in JSON."""
    values = zip(map(astuple, results), map(str, map(_PEAK_MEMORY, results)), strict=True)
    return [digest & UNSIGNED_64 for digest in map(hash, values)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _detail(response: httpx.Response) -> str:
    try:
        payload: Any = response.json()
    except ValueError:
        return response.text[:200] or "(empty body)"
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    if isinstance(detail, list):
        messages = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(part) for part in item.get("loc", []))
                messages.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(messages) or str(detail)
    return str(detail)[:200]
