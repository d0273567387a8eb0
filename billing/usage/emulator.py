"""Local emulator of MKA1 `GET /api/v1/sandbox/usage` serving deterministic synthetic usage."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from billing.usage.faults import (
    DATA_FAULT_KINDS,
    HTTP_FAULT_KINDS,
    UNKNOWN_SESSION_KIND,
    FaultInjector,
    FaultPlan,
    PageFault,
)
from billing.usage.synthetic import (
    BUCKET_WIDTHS,
    GROUP_BY_DIMENSIONS,
    METRICS,
    RESULT_OBJECT,
    USAGE_PATH,
    Accumulator,
    GroupedBucket,
    GroupKey,
    JsonObject,
    SyntheticUsage,
    bucket_dict,
    normalize_group_by,
    result_dict,
    window_bucket_width,
)

__all__ = [
    "GROUP_BY_DIMENSIONS",
    "METRICS",
    "RESULT_OBJECT",
    "USAGE_PATH",
    "EmulatorReply",
    "SyntheticUsage",
    "UsageEmulator",
    "encode_json",
    "normalize_group_by",
    "running_emulator",
    "serve_emulator",
]

logger = logging.getLogger(__name__)


def encode_json(body: Any) -> bytes:
    """Compact UTF-8 JSON; Decimals (e.g. peak_memory_mib) are written as exact JSON numbers."""
    return json.dumps(body, default=_exact_json_number, separators=(",", ":")).encode()


def _exact_json_number(value: object) -> float:  # float-ok: JSON text only, exactness checked
    """A Decimal as the float whose shortest repr is the same decimal, so the text is exact."""
    if isinstance(value, Decimal):
        as_float = float(value)  # float-ok
        if math.isfinite(as_float) and Decimal(repr(as_float)) == value:
            return as_float
        raise ValueError(f"{value} has no exact short JSON form")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _InvalidRequest(Exception):
    """A request that fails validation; carries FastAPI-style error items."""

    def __init__(self, *errors: JsonObject) -> None:
        super().__init__(errors)
        self.errors = list(errors)


def _validation_error(name: str, msg: str, error_type: str = "value_error") -> JsonObject:
    return {"loc": ["query", name], "msg": msg, "type": error_type}


@dataclass(frozen=True, slots=True)
class _UsageQuery:
    """A normalized usage query: everything that determines the flattened results."""

    start_time: int
    end_time: int
    bucket_width: str
    group_by: tuple[str, ...]
    org_ids: tuple[str, ...] | None

    def fingerprint(self) -> str:
        canonical = json.dumps(
            [self.start_time, self.end_time, self.bucket_width, self.group_by, self.org_ids]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where the next page starts, for which query, and the end time the query resolved to.

    `replay` marks the fresh cursor of a duplicated page (fault injection): it serves the page
    at `offset` once more, without faults.
    """

    offset: int
    end_time: int
    fingerprint: str
    replay: bool = False

    def encode(self) -> str:
        fields: list[object] = [self.offset, self.end_time, self.fingerprint]
        if self.replay:
            fields.append(1)
        payload = json.dumps(fields).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> _Cursor:
        try:
            payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            offset, end_time, fingerprint, *replay = json.loads(payload)
        except (binascii.Error, ValueError, TypeError):
            raise _InvalidRequest(
                _validation_error("page", "Value error, invalid page cursor")
            ) from None
        if not (
            type(offset) is int
            and offset >= 0
            and type(end_time) is int
            and isinstance(fingerprint, str)
            and replay in ([], [1])
        ):
            raise _InvalidRequest(_validation_error("page", "Value error, invalid page cursor"))
        return cls(offset, end_time, fingerprint, replay=bool(replay))


@dataclass(frozen=True, slots=True)
class EmulatorReply:
    """An HTTP answer: status, JSON payload and extra headers; no payload drops the connection."""

    status: int
    payload: bytes | None
    headers: tuple[tuple[str, str], ...] = ()


# A flattened result: (bucket start, bucket end, (group key, aggregate) or None if empty).
_Entry = tuple[int, int, tuple[GroupKey, Accumulator] | None]


class UsageEmulator:
    """Answers usage requests like the MKA1 API: auth, validation (422), pagination.

    Buckets are calendar-aligned in UTC as the MKA1 SDK documents: `start_time` is snapped down
    and `end_time` up to the bucket width, so the first and last buckets may extend beyond the
    requested range (with their whole bucket's usage).

    A FaultPlan makes it misbehave on chosen pages; a page is numbered by the offset in its
    cursor (1-based), so a retry of the same page meets the same page's faults.
    """

    cached_queries: Final = 4

    def __init__(
        self,
        usage: SyntheticUsage,
        *,
        page_size: int = 500,
        api_key: str | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.usage = usage
        self.page_size = page_size
        self.api_key = api_key
        self.faults = faults or FaultPlan()
        self._injector = FaultInjector(self.faults)
        self._entries_by_query: OrderedDict[_UsageQuery, list[_Entry]] = OrderedDict()
        self._lock = threading.Lock()

    def faults_served(self) -> int:
        """How many page faults have been served so far."""
        return self._injector.served()

    def respond(
        self, path: str, query: dict[str, list[str]], headers: Mapping[str, str]
    ) -> EmulatorReply:
        """The HTTP answer to a GET, with the fault plan applied (latency, errors, drops, cuts)."""
        if self.faults.latency_seconds:
            time.sleep(self.faults.latency_seconds)
        page = self._page_number(path, query)
        fault = None if page is None else self._injector.take(page, HTTP_FAULT_KINDS)
        if fault is not None and fault.kind != "truncate":
            return _fault_reply(fault, self.faults.retry_after)
        status, body = self.handle(path, query, headers)
        payload = encode_json(body)
        if fault is not None:
            payload = payload[: len(payload) // 2]
        return EmulatorReply(status, payload)

    def _page_number(self, path: str, query: dict[str, list[str]]) -> int | None:
        """The 1-based page a usage request asks for, from its cursor's offset; None if unclear."""
        if path != USAGE_PATH:
            return None
        cursor_text = _last(query, "page")
        if not cursor_text:
            return 1
        try:
            return _Cursor.decode(cursor_text).offset // self.page_size + 1
        except _InvalidRequest:
            return None

    def handle(
        self, path: str, query: dict[str, list[str]], headers: Mapping[str, str]
    ) -> tuple[int, JsonObject]:
        """(HTTP status, JSON body) for a GET of `path` with parsed query and request headers."""
        if path != USAGE_PATH:
            return 404, {"detail": "Not Found"}
        auth_problem = self._authentication_problem(headers)
        if auth_problem is not None:
            return 401, {"detail": auth_problem}
        try:
            return 200, self._page(query)
        except _InvalidRequest as invalid:
            return 422, {"detail": invalid.errors}

    def _authentication_problem(self, headers: Mapping[str, str]) -> str | None:
        authorization = _header(headers, "Authorization") or ""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "Not authenticated"
        if self.api_key is not None and not hmac.compare_digest(
            token.encode(), self.api_key.encode()
        ):
            return "Invalid API key"
        return None

    def _page(self, query: dict[str, list[str]]) -> JsonObject:
        usage_query, cursor = _parse_usage_query(query)
        entries = self._entries(usage_query)
        offset = 0 if cursor is None else cursor.offset
        if offset > len(entries):
            raise _InvalidRequest(_validation_error("page", "Value error, invalid page cursor"))
        end = offset + self.page_size
        has_more = end < len(entries)
        next_cursor = _Cursor(end, usage_query.end_time, usage_query.fingerprint())
        body = {
            "object": "page",
            "data": _page_buckets(entries[offset:end], usage_query.group_by),
            "has_more": has_more,
            "next_page": next_cursor.encode() if has_more else None,
        }
        if cursor is None or not cursor.replay:
            fault = self._injector.take(offset // self.page_size + 1, DATA_FAULT_KINDS)
            if fault is not None:
                this_page = _Cursor(offset, usage_query.end_time, usage_query.fingerprint())
                self._spoil_page(body, fault, this_page)
        return body

    def _spoil_page(self, body: JsonObject, fault: PageFault, this_page: _Cursor) -> None:
        """Apply a data fault to a page body; `this_page` is the cursor of the page served."""
        if fault.kind in ("unknown-enum", "lose-result"):
            for bucket in body["data"]:
                if bucket["results"]:
                    if fault.kind == "lose-result":
                        del bucket["results"][0]
                    else:
                        bucket["results"][0]["session_kind"] = UNKNOWN_SESSION_KIND
                    return
            return
        if fault.kind == "repeat-cursor":
            earlier = max(this_page.offset - self.page_size, 0)
            next_page = _Cursor(earlier, this_page.end_time, this_page.fingerprint)
        else:  # duplicate-page
            next_page = _Cursor(this_page.offset, this_page.end_time, this_page.fingerprint, True)
        body["has_more"] = True
        body["next_page"] = next_page.encode()

    def _entries(self, usage_query: _UsageQuery) -> list[_Entry]:
        """The flattened results of a query, cached for the last few distinct queries."""
        with self._lock:
            cached = self._entries_by_query.get(usage_query)
            if cached is not None:
                self._entries_by_query.move_to_end(usage_query)
                return cached
        entries = _flatten(
            self.usage.grouped_buckets(
                usage_query.start_time,
                usage_query.end_time,
                usage_query.bucket_width,
                usage_query.group_by,
                usage_query.org_ids,
            )
        )
        with self._lock:
            self._entries_by_query[usage_query] = entries
            while len(self._entries_by_query) > self.cached_queries:
                self._entries_by_query.popitem(last=False)
        return entries


_FAULT_DETAILS: Final = {
    "429": "Too Many Requests",
    "500": "Internal Server Error",
    "503": "Service Unavailable",
}


def _fault_reply(fault: PageFault, retry_after: str) -> EmulatorReply:
    """The answer of an HTTP fault: an error status (with Retry-After on 429/503) or a drop."""
    if fault.kind == "drop":
        return EmulatorReply(0, None)
    headers = (("Retry-After", retry_after),) if retry_after and fault.kind != "500" else ()
    payload = encode_json({"detail": _FAULT_DETAILS[fault.kind]})
    return EmulatorReply(int(fault.kind), payload, headers)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value by case-insensitive name."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _parse_usage_query(query: dict[str, list[str]]) -> tuple[_UsageQuery, _Cursor | None]:
    """The normalized query and the page cursor, or _InvalidRequest with every problem found."""
    errors: list[JsonObject] = []
    start_time = _int_param(query, "start_time", errors, required=True)
    end_time = _int_param(query, "end_time", errors, required=False)
    bucket_width = _bucket_width_param(query, errors)
    group_by = _group_by_param(query, errors)
    _bool_param(query, "all_orgs", errors)  # accepted; the emulator is a cluster-admin view
    org_ids = _list_param(query, "org_ids")
    if errors or start_time is None:
        raise _InvalidRequest(*errors)
    page = _last(query, "page")
    cursor = _Cursor.decode(page) if page else None
    if end_time is None:
        end_time = cursor.end_time if cursor is not None else int(time.time())
    try:
        window_bucket_width(start_time, end_time, bucket_width)
    except ValueError as problem:
        field = "end_time" if end_time <= start_time else "bucket_width"
        raise _InvalidRequest(_validation_error(field, f"Value error, {problem}")) from None
    usage_query = _UsageQuery(
        start_time=start_time,
        end_time=end_time,
        bucket_width=bucket_width,
        group_by=group_by,
        org_ids=None if org_ids is None else tuple(sorted(set(org_ids))),
    )
    if cursor is not None and cursor.fingerprint != usage_query.fingerprint():
        raise _InvalidRequest(
            _validation_error("page", "Value error, page cursor belongs to a different query")
        )
    return usage_query, cursor


def _last(query: dict[str, list[str]], name: str) -> str | None:
    """The last value of a single-valued parameter, as FastAPI takes it."""
    values = query.get(name)
    return values[-1] if values else None


def _list_param(query: dict[str, list[str]], name: str) -> list[str] | None:
    """A repeated and/or comma-separated parameter; None when absent."""
    values = query.get(name)
    if not values:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _int_param(
    query: dict[str, list[str]], name: str, errors: list[JsonObject], *, required: bool
) -> int | None:
    raw = _last(query, name)
    if raw is None:
        if required:
            errors.append(_validation_error(name, "Field required", "missing"))
        return None
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,18}\s*", raw):
        errors.append(
            _validation_error(
                name,
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
            )
        )
        return None
    return int(raw)


def _bucket_width_param(query: dict[str, list[str]], errors: list[JsonObject]) -> str:
    bucket_width = _last(query, "bucket_width")
    if bucket_width is None:
        return "1d"
    if bucket_width not in BUCKET_WIDTHS:
        errors.append(
            _validation_error("bucket_width", "Input should be '1m', '1h' or '1d'", "enum")
        )
    return bucket_width


def _group_by_param(query: dict[str, list[str]], errors: list[JsonObject]) -> tuple[str, ...]:
    try:
        return normalize_group_by(query.get("group_by", []))
    except ValueError as problem:
        errors.append(_validation_error("group_by", f"Value error, {problem}"))
        return ()


_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off", "f", "n"})


def _bool_param(query: dict[str, list[str]], name: str, errors: list[JsonObject]) -> bool:
    raw = _last(query, name)
    if raw is None:
        return False
    word = raw.strip().lower()
    if word not in _TRUE_WORDS | _FALSE_WORDS:
        errors.append(
            _validation_error(
                name, "Input should be a valid boolean, unable to interpret input", "bool_parsing"
            )
        )
    return word in _TRUE_WORDS


def _flatten(grouped: list[GroupedBucket]) -> list[_Entry]:
    """(bucket, result) pairs in order; an empty bucket takes one slot so it is still served."""
    entries: list[_Entry] = []
    for start, end, groups in grouped:
        if groups:
            entries.extend((start, end, group) for group in groups)
        else:
            entries.append((start, end, None))
    return entries


def _page_buckets(entries: Sequence[_Entry], dimensions: tuple[str, ...]) -> list[JsonObject]:
    """Buckets of one page; a bucket split across pages carries its part of the results."""
    buckets: list[JsonObject] = []
    for start, end, group in entries:
        if not buckets or buckets[-1]["start_time"] != start:
            buckets.append(bucket_dict(start, end, []))
        if group is not None:
            buckets[-1]["results"].append(result_dict(dimensions, *group))
    return buckets


# --------------------------------------------------------------------------- HTTP serving


class _EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: UsageEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _UsageRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _UsageRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MKA1UsageEmulator/1.0"
    timeout = 60
    disable_nagle_algorithm = True  # headers and body are separate writes on a kept-alive socket

    def do_GET(self) -> None:
        try:
            url = urlsplit(self.path)
            reply = self._emulator().respond(
                url.path, parse_qs(url.query, keep_blank_values=True), dict(self.headers.items())
            )
        except Exception:
            logger.exception("usage emulator failed on GET %s", self.path)
            reply = EmulatorReply(500, encode_json({"detail": "Internal Server Error"}))
        if reply.payload is None:
            self.close_connection = True  # hang up without a word, like a crashed proxy
            return
        self._send_json(reply.status, reply.payload, reply.headers)

    def _reject_method(self) -> None:
        self.close_connection = True  # the request body, if any, is left unread
        self._send_json(405, encode_json({"detail": "Method Not Allowed"}))

    do_POST = do_PUT = do_PATCH = do_DELETE = _reject_method

    def _emulator(self) -> UsageEmulator:
        assert isinstance(self.server, _EmulatorHTTPServer)
        return self.server.emulator

    def _send_json(
        self, status: int, payload: bytes, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status == 405:
            self.send_header("Allow", "GET")
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log lines."""


def serve_emulator(
    emulator: UsageEmulator, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """An HTTP server for the emulator, bound to (host, port) but not yet serving."""
    return _EmulatorHTTPServer((host, port), emulator)


@contextlib.contextmanager
def running_emulator(
    orgs: int = 5,
    seed: int = 1,
    *,
    page_size: int = 500,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultPlan | None = None,
    reported_until: int | None = None,
) -> Iterator[str]:
    """Serve in a daemon thread; yield the base URL, e.g. 'http://127.0.0.1:54321'."""
    emulator = UsageEmulator(
        SyntheticUsage(orgs, seed, reported_until),
        page_size=page_size,
        api_key=api_key,
        faults=faults,
    )
    server = serve_emulator(emulator, host, port)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},  # so that leaving the block is quick
        name="usage-emulator",
        daemon=True,
    )
    thread.start()
    url_host = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104
    try:
        yield f"http://{url_host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
