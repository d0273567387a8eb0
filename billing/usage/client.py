"""The MKA1 usage API over httpx: pagination, bounded retries, strict validation per page."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr, ValidationError
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
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
from billing.usage.contract import UsagePageModel

log = logging.getLogger(__name__)

USAGE_PATH = "/api/v1/sandbox/usage"
MAX_PAGES = 100_000


@dataclass(frozen=True)
class UsageQuery:
    """The parameters of one usage fetch (a period, grouped for billing by default)."""

    start_time: int
    end_time: int
    bucket_width: str = "1d"
    group_by: tuple[str, ...] = ("org_id", "api_key_id", "user_id")
    all_orgs: bool = True
    org_ids: tuple[str, ...] = ()

    @classmethod
    def for_period(cls, period: BillingPeriod, org_ids: tuple[str, ...] = ()) -> UsageQuery:
        return cls(start_time=period.start_unix, end_time=period.end_unix, org_ids=org_ids)

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
    """One validated page: its number (1-based) and its results as domain records."""

    number: int
    records: list[UsageRecord]


class _Transient(Exception):
    """A failure worth another attempt (connect error, timeout, 429, 5xx)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UsageClient:
    """Fetches usage pages from the MKA1 API; the httpx.Client is injected (its transport too)."""

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        api_key: SecretStr | None,
        *,
        on_behalf_of: str | None = None,
        max_attempts: int = 5,
        max_wait_seconds: float = 8.0,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._on_behalf_of = on_behalf_of
        self._max_attempts = max_attempts
        self._max_wait_seconds = max_wait_seconds

    def __repr__(self) -> str:
        return f"UsageClient(base_url={self._base_url!r}, api_key=***)"

    def iter_pages(self, query: UsageQuery) -> Iterator[UsagePage]:
        """Yield validated pages in order until the upstream says there are no more."""
        url = self._base_url + USAGE_PATH
        params: dict[str, str] | None = query.params()
        for number in range(1, MAX_PAGES + 1):
            body = self._get_with_retries(url, params, number)
            page = self._validate(body, number, query)
            yield UsagePage(number, list(_records(page, number)))
            if not page.has_more:
                return
            if not page.next_page:
                raise UsageContractError(
                    f"usage page {number}: has_more is true but next_page is empty; "
                    "the upstream pagination is broken, retry later or report it"
                )
            url, params = self._next_request(url, query, page.next_page, number)
        raise UsageContractError(f"usage fetch stopped after {MAX_PAGES} pages without an end")

    def iter_records(self, query: UsageQuery) -> Iterator[UsageRecord]:
        for page in self.iter_pages(query):
            yield from page.records

    def _next_request(
        self, url: str, query: UsageQuery, cursor: str, number: int
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

    def _get_with_retries(self, url: str, params: dict[str, str] | None, number: int) -> bytes:
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=self._max_wait_seconds),
            retry=retry_if_exception_type(_Transient),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._get_once(url, params, number)
        except RetryError as error:
            last = error.last_attempt.exception()
            reason = last.reason if isinstance(last, _Transient) else str(last)
            raise UpstreamUnavailable(
                f"usage page {number}: the MKA1 API failed {self._max_attempts} times "
                f"(last: {reason}); check MKA1_BASE_URL and retry later"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _get_once(self, url: str, params: dict[str, str] | None, number: int) -> bytes:
        try:
            response = self._http.get(url, params=params, headers=self._headers())
        except httpx.TransportError as error:
            log.warning("usage page %d: %s", number, type(error).__name__)
            raise _Transient(f"{type(error).__name__} from {_origin(url)}") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}")
        if status in (401, 403):
            raise UpstreamAuthError(
                f"usage page {number}: the MKA1 API refused the API key (HTTP {status}); "
                "set MKA1_API_KEY to an admin key with the all_orgs scope"
            )
        if status == 422:
            raise UpstreamRejected(f"usage page {number}: HTTP 422: {_detail(response)}")
        if status != 200:
            raise UpstreamRejected(
                f"usage page {number}: unexpected HTTP {status}: {_detail(response)}"
            )
        return response.content

    def _validate(self, body: bytes, number: int, query: UsageQuery) -> UsagePageModel:
        try:
            raw = json.loads(body, parse_float=Decimal)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UsageContractError(
                f"usage page {number}: the body is not valid JSON ({error}); "
                "the response may be truncated, retry the close"
            ) from None
        try:
            page = UsagePageModel.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise UsageContractError(
                f"usage page {number}: field {field}: {first['msg']} (got {first.get('input')!r})"
            ) from None
        for index, bucket in enumerate(page.data):
            if bucket.start_time < query.start_time or bucket.end_time > query.end_time:
                raise UsageContractError(
                    f"usage page {number}: field data.{index}: bucket "
                    f"[{bucket.start_time}, {bucket.end_time}) lies outside the requested period "
                    f"[{query.start_time}, {query.end_time})"
                )
        return page


def _records(page: UsagePageModel, number: int) -> Iterator[UsageRecord]:
    for bucket_index, bucket in enumerate(page.data):
        for result_index, result in enumerate(bucket.results):
            if not result.org_id:
                raise UsageContractError(
                    f"usage page {number}: field "
                    f"data.{bucket_index}.results.{result_index}.org_id: "
                    "missing; the fetch must group by org_id"
                )
            yield UsageRecord(
                bucket_start=bucket.start_time,
                bucket_end=bucket.end_time,
                org_id=result.org_id,
                api_key_id=result.api_key_id,
                user_id=result.user_id,
                duration_ms=result.duration_ms,
                reserved_memory_mib=result.reserved_memory_mib,
                peak_memory_mib=result.peak_memory_mib,
                workspace_bytes_in=result.workspace_bytes_in,
                workspace_bytes_out=result.workspace_bytes_out,
                num_sessions=result.num_sessions,
                request_count=result.request_count,
                num_operations=result.num_operations,
                files_changed_count=result.files_changed_count,
                oom_killed_count=result.oom_killed_count,
            )


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
