"""Local emulator of MKA1 `GET /api/v1/sandbox/usage` serving deterministic synthetic usage."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import math
import random
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

logger = logging.getLogger(__name__)

USAGE_PATH: Final = "/api/v1/sandbox/usage"
RESULT_OBJECT: Final = "organization.usage.sandbox.result"

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400
BUCKET_WIDTHS: Final = {"1m": MINUTE, "1h": HOUR, "1d": DAY}
MAX_BUCKETS: Final = 100_000

# Canonical order of the grouping dimensions: group keys and result ordering follow it.
GROUP_BY_DIMENSIONS: Final = (
    "org_id",
    "api_key_id",
    "user_id",
    "session_kind",
    "operation",
    "provider",
)
# Additive fields of a result, in the contract's order; an internal metrics tuple follows it.
METRICS: Final = (
    "num_operations",
    "num_sessions",
    "request_count",
    "duration_ms",
    "workspace_bytes_in",
    "workspace_bytes_out",
    "files_changed_count",
    "oom_killed_count",
)

MEMORY_SIZES_MIB: Final = (256, 512, 1024, 2048, 4096, 8192)
MEMORY_SIZE_WEIGHTS: Final = (5, 15, 30, 25, 15, 10)
PARETO_ALPHA: Final = 1.16  # the "80/20" shape: a few orgs dominate
MAX_ORG_SCALE: Final = 200.0
NO_USER_PAIR_SHARE: Final = 0.3  # chance that a key also has a "no user" pair
BROWSER_SESSION_SHARE: Final = 0.2
AWS_SHARE: Final = 0.6  # the rest of the rows run on "gcp"
MIB: Final = 1024**2
MAX_TRANSFER_BYTES: Final = 64 * 1024**3
# Relative activity by local hour of day, for splitting a day across hours.
DIURNAL_PROFILE: Final = (
    *(1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9),  # 00:00-11:59
    *(8, 9, 10, 10, 9, 7, 5, 4, 3, 2, 2, 1),  # 12:00-23:59
)

Metrics = tuple[int, ...]
Part = tuple[str, Metrics]  # (operation, metrics in METRICS order)
GroupKey = tuple[str | None, ...]
JsonObject = dict[str, Any]


# --------------------------------------------------------------------------- synthetic data


@dataclass(frozen=True, slots=True)
class _OrgProfile:
    """The stable traits of one org: size, keys and users, and time zone."""

    org_id: str
    scale: float  # float-ok: synthetic activity scale
    pairs: tuple[tuple[str, str | None], ...]  # (api_key_id, user_id or None)
    weekday_activity: float  # float-ok: chance that a pair is active on a weekday
    utc_offset_hours: int


@dataclass(frozen=True, slots=True)
class _FinestRow:
    """One (day, org, api key, user) row, broken down by operation."""

    seed_text: str
    org_id: str
    api_key_id: str
    user_id: str | None
    session_kind: str
    provider: str
    reserved_memory_mib: int | None
    peak_memory_thousandths: int | None
    parts: tuple[Part, ...]


class _Accumulator:
    """Running aggregate of one group: sums of the metrics, maxima of the memory fields."""

    __slots__ = ("peak_memory_thousandths", "reserved_memory_mib", "totals")

    def __init__(self) -> None:
        self.totals: list[int] = [0] * len(METRICS)
        self.reserved_memory_mib: int | None = None
        self.peak_memory_thousandths: int | None = None

    def add(self, metrics: Metrics, row: _FinestRow) -> None:
        self.totals = [total + value for total, value in zip(self.totals, metrics, strict=True)]
        self.reserved_memory_mib = _max_optional(self.reserved_memory_mib, row.reserved_memory_mib)
        self.peak_memory_thousandths = _max_optional(
            self.peak_memory_thousandths, row.peak_memory_thousandths
        )


GroupedBucket = tuple[int, int, list[tuple[GroupKey, _Accumulator]]]


class SyntheticUsage:
    """Deterministic synthetic usage for N orgs; a pure function of (orgs, seed)."""

    def __init__(self, orgs: int, seed: int) -> None:
        if orgs < 0:
            raise ValueError("orgs must not be negative")
        self.orgs = orgs
        self.seed = seed
        self._profiles = {org_id: _org_profile(seed, org_id) for org_id in self.org_ids()}

    def org_ids(self) -> list[str]:
        """The org ids: "org-0001", "org-0002", ..."""
        return [f"org-{number:04d}" for number in range(1, self.orgs + 1)]

    def results(
        self,
        start_time: int,
        end_time: int,
        bucket_width: str,
        group_by: Sequence[str],
        org_ids: Sequence[str] | None,
    ) -> list[JsonObject]:
        """Buckets (SandboxUsageBucket dicts with SandboxUsageResult lists) covering [start, end).

        Raises ValueError for an unknown bucket width or dimension, an empty window, or a `1m`
        window longer than a day. `org_ids=None` means every org.
        """
        dimensions = normalize_group_by(group_by)
        grouped = self._grouped_buckets(start_time, end_time, bucket_width, dimensions, org_ids)
        return [
            _bucket_dict(start, end, [_result_dict(dimensions, k, acc) for k, acc in groups])
            for start, end, groups in grouped
        ]

    def _grouped_buckets(
        self,
        start_time: int,
        end_time: int,
        bucket_width: str,
        dimensions: tuple[str, ...],
        org_ids: Sequence[str] | None,
    ) -> list[GroupedBucket]:
        """The aggregated buckets, each with its (group key, accumulator) pairs sorted by key."""
        width = _window_bucket_width(start_time, end_time, bucket_width)
        buckets: dict[int, dict[GroupKey, _Accumulator]] = {
            bucket_start: {} for bucket_start in _bucket_starts(start_time, end_time, width)
        }
        for profile in self._selected_profiles(org_ids):
            for day_start in _day_starts(start_time, end_time):
                for row in _day_rows(self.seed, profile, day_start):
                    pieces = _time_pieces(row, profile, day_start, start_time, end_time, width)
                    for piece_start, parts in pieces:
                        groups = buckets[piece_start - piece_start % width]
                        _add_parts(groups, row, parts, dimensions)
        return [
            (
                max(bucket_start, start_time),
                min(bucket_start + width, end_time),
                sorted(groups.items(), key=lambda item: _sortable(item[0])),
            )
            for bucket_start, groups in buckets.items()
        ]

    def _selected_profiles(self, org_ids: Sequence[str] | None) -> list[_OrgProfile]:
        if org_ids is None:
            return list(self._profiles.values())
        wanted = set(org_ids)
        return [profile for org_id, profile in self._profiles.items() if org_id in wanted]


def normalize_group_by(values: Sequence[str]) -> tuple[str, ...]:
    """Dimensions from repeated or comma-separated values, deduplicated, in canonical order."""
    names = {name.strip() for value in values for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(GROUP_BY_DIMENSIONS))
    if unknown:
        raise ValueError(
            f"unknown group_by dimension {unknown[0]!r}; "
            f"expected any of {', '.join(GROUP_BY_DIMENSIONS)}"
        )
    return tuple(name for name in GROUP_BY_DIMENSIONS if name in names)


def _window_bucket_width(start_time: int, end_time: int, bucket_width: str) -> int:
    """The bucket width in seconds, after checking the window suits it."""
    if bucket_width not in BUCKET_WIDTHS:
        raise ValueError(f"bucket_width must be one of {', '.join(BUCKET_WIDTHS)}")
    width = BUCKET_WIDTHS[bucket_width]
    if end_time <= start_time:
        raise ValueError("end_time must be greater than start_time")
    if width == MINUTE and end_time - start_time > DAY:
        raise ValueError("bucket_width 1m allows a window of at most one day")
    if (end_time - start_time) // width > MAX_BUCKETS:
        raise ValueError(f"the window holds more than {MAX_BUCKETS} buckets")
    return width


def _bucket_starts(start_time: int, end_time: int, width: int) -> range:
    """Starts of the UTC-aligned buckets overlapping [start, end)."""
    return range(start_time - start_time % width, end_time, width)


def _day_starts(start_time: int, end_time: int) -> range:
    return _bucket_starts(start_time, end_time, DAY)


def _org_profile(seed: int, org_id: str) -> _OrgProfile:
    """An org's stable traits; bigger orgs tend to have more keys, users and active days."""
    rng = random.Random(f"{seed}:{org_id}:profile")
    scale = min(rng.paretovariate(PARETO_ALPHA), MAX_ORG_SCALE)
    size_bonus = 1 if scale >= 2.0 else 0
    key_count = min(4, rng.randint(1, 4) + size_bonus)
    user_count = min(4, rng.randint(1, 4) + size_bonus)
    users = [f"user-{org_id}-{number}" for number in range(1, user_count + 1)]
    pairs: list[tuple[str, str | None]] = []
    for key_number in range(1, key_count + 1):
        key = f"key-{org_id}-{key_number}"
        pairs.extend((key, user) for user in users)
        if rng.random() < NO_USER_PAIR_SHARE:
            pairs.append((key, None))
    return _OrgProfile(
        org_id=org_id,
        scale=scale,
        pairs=tuple(pairs),
        weekday_activity=min(0.95, 0.85 + 0.1 * math.log(scale)),
        utc_offset_hours=rng.randint(-8, 9),
    )


def _day_rows(seed: int, profile: _OrgProfile, day_start: int) -> list[_FinestRow]:
    rows = (_finest_row(seed, profile, day_start, key, user) for key, user in profile.pairs)
    return [row for row in rows if row is not None]


def _activity_probability(profile: _OrgProfile, day_start: int) -> float:  # float-ok
    weekday = (day_start // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return profile.weekday_activity * (0.5 if weekday >= 5 else 1.0)


def _finest_row(
    seed: int, profile: _OrgProfile, day_start: int, key: str, user: str | None
) -> _FinestRow | None:
    """The usage of one (key, user) pair on one day, or None if it was idle that day."""
    seed_text = f"{seed}:{profile.org_id}:{day_start}:{key}:{user}"
    rng = random.Random(seed_text)
    if rng.random() >= _activity_probability(profile, day_start):
        return None
    intensity = profile.scale * rng.lognormvariate(0.0, 0.6)
    sessions = 1 + int(rng.expovariate(1.0) * 2.0 * intensity)
    reserved, peak = _draw_memory(rng)
    return _FinestRow(
        seed_text=seed_text,
        org_id=profile.org_id,
        api_key_id=key,
        user_id=user,
        session_kind="browser" if rng.random() < BROWSER_SESSION_SHARE else "standard",
        provider="aws" if rng.random() < AWS_SHARE else "gcp",
        reserved_memory_mib=reserved,
        peak_memory_thousandths=peak,
        parts=_draw_operation_parts(rng, sessions),
    )


def _draw_memory(rng: random.Random) -> tuple[int | None, int | None]:
    """(reserved MiB, peak in thousandths of a MiB); ~4% lack the reservation, ~1% both."""
    reserved = rng.choices(MEMORY_SIZES_MIB, weights=MEMORY_SIZE_WEIGHTS)[0]
    peak_thousandths = rng.randint(reserved * 150, reserved * 1000)
    roll = rng.random()
    if roll < 0.01:
        return None, None
    if roll < 0.05:
        return None, peak_thousandths
    return reserved, peak_thousandths


def _draw_operation_parts(rng: random.Random, sessions: int) -> tuple[Part, ...]:
    """A day's operations of one pair; every metric is attributed to exactly one operation."""
    oom_killed = rng.randint(1, max(1, sessions // 20)) if rng.random() < 0.03 else 0
    terminated = min(sessions, oom_killed + rng.randint(0, sessions // 8))
    session_length_ms = rng.randint(60_000, 90 * 60_000)
    turns = rng.randint(0, 12 * sessions)
    repo_tasks = rng.randint(0, sessions) // 2
    commands = rng.randint(sessions, 25 * sessions)
    code_runs = rng.randint(0, 6 * sessions)
    uploads = rng.randint(0, sessions)
    archive_uploads = rng.randint(0, sessions) // 3
    downloads = rng.randint(0, sessions)
    archive_downloads = rng.randint(0, sessions) // 3
    parts = (
        _part(
            "session_start",
            sessions,
            sessions=sessions,
            duration_ms=sessions * session_length_ms,
        ),
        _part("session_stop", sessions - terminated),
        _part("session_terminate", terminated, oom_killed=oom_killed),
        _part("turn", turns, requests_each=3, files_changed=rng.randint(0, 2 * turns)),
        _part(
            "repo_task", repo_tasks, requests_each=4, files_changed=rng.randint(0, 8 * repo_tasks)
        ),
        _part("command", commands, files_changed=rng.randint(0, commands) // 4),
        _part("code", code_runs, files_changed=rng.randint(0, code_runs) // 2),
        _part("workspace_manifest", rng.randint(0, 2 * sessions)),
        _part("workspace_download", downloads, bytes_out=_transfer_bytes(rng, downloads, 4 * MIB)),
        _part(
            "workspace_archive_download",
            archive_downloads,
            requests_each=2,
            bytes_out=_transfer_bytes(rng, archive_downloads, 64 * MIB),
        ),
        _part("workspace_upload", uploads, bytes_in=_transfer_bytes(rng, uploads, 4 * MIB)),
        _part(
            "workspace_archive_upload",
            archive_uploads,
            requests_each=2,
            bytes_in=_transfer_bytes(rng, archive_uploads, 64 * MIB),
        ),
    )
    return tuple(part for part in parts if part[1][0] > 0)


def _part(
    operation: str,
    count: int,
    *,
    requests_each: int = 1,
    sessions: int = 0,
    duration_ms: int = 0,
    bytes_in: int = 0,
    bytes_out: int = 0,
    files_changed: int = 0,
    oom_killed: int = 0,
) -> Part:
    metrics = (
        count,
        sessions,
        count * requests_each,
        duration_ms,
        bytes_in,
        bytes_out,
        files_changed,
        oom_killed,
    )
    return operation, metrics


def _transfer_bytes(rng: random.Random, transfers: int, typical_size: int) -> int:
    """Heavy-tailed bytes moved by `transfers` transfers of around `typical_size` each."""
    if transfers == 0:
        return 0
    size = int(rng.lognormvariate(math.log(typical_size), 1.4))
    return min(transfers * max(size, 1), MAX_TRANSFER_BYTES)


# --------------------------------------------------------------------------- time splitting


def _time_pieces(
    row: _FinestRow,
    profile: _OrgProfile,
    day_start: int,
    start_time: int,
    end_time: int,
    width: int,
) -> Iterator[tuple[int, Sequence[Part]]]:
    """The row's usage inside [start, end) as (piece start, parts), as coarse as possible.

    A day splits into 24 hours and an hour into 60 minutes by exact integer splits, so the
    pieces always nest: a day equals the sum of its hours, an hour the sum of its minutes. A
    minute that straddles the window edge counts where it starts.
    """
    if width == DAY and start_time <= day_start and day_start + DAY <= end_time:
        yield day_start, row.parts
        return
    for hour, hour_parts in enumerate(_split_parts(row.parts, _hour_weights(row, profile))):
        hour_start = day_start + hour * HOUR
        if not hour_parts or hour_start + HOUR <= start_time or hour_start >= end_time:
            continue
        if width >= HOUR and start_time <= hour_start and hour_start + HOUR <= end_time:
            yield hour_start, hour_parts
            continue
        minute_weights = _minute_weights(row, hour_start)
        for minute, minute_parts in enumerate(_split_parts(hour_parts, minute_weights)):
            minute_start = hour_start + minute * MINUTE
            if minute_parts and start_time <= minute_start < end_time:
                yield minute_start, minute_parts


def _hour_weights(row: _FinestRow, profile: _OrgProfile) -> list[int]:
    """Working-hours-shaped weights in the org's time zone, with some noise."""
    rng = random.Random(f"{row.seed_text}:hours")
    return [
        DIURNAL_PROFILE[(hour + profile.utc_offset_hours) % 24] * rng.randint(1, 4)
        for hour in range(24)
    ]


def _minute_weights(row: _FinestRow, hour_start: int) -> list[int]:
    rng = random.Random(f"{row.seed_text}:{hour_start}")
    return [rng.randint(1, 4) for _ in range(60)]


def _split_parts(parts: Sequence[Part], weights: Sequence[int]) -> list[list[Part]]:
    """Each part split over len(weights) slots; a slot keeps only its non-zero parts."""
    running_weights = list(itertools.accumulate(weights, initial=0))
    slots: list[list[Part]] = [[] for _ in weights]
    for operation, metrics in parts:
        columns = [_apportion(value, running_weights) for value in metrics]
        for slot, values in zip(slots, zip(*columns, strict=True), strict=True):
            if any(values):
                slot.append((operation, values))
    return slots


def _apportion(total: int, running_weights: Sequence[int]) -> list[int]:
    """Integer shares of `total` in proportion to the weights, summing exactly to `total`.

    `running_weights` are the cumulative weights starting at 0. Each slot gets the difference of
    the floored running shares, so every slot is within 1 of its exact share and no unit is lost.
    """
    if total == 0:
        return [0] * (len(running_weights) - 1)
    weight_sum = running_weights[-1]
    floors = [total * running // weight_sum for running in running_weights]
    return [upper - lower for lower, upper in itertools.pairwise(floors)]


# --------------------------------------------------------------------------- aggregation


def _add_parts(
    groups: dict[GroupKey, _Accumulator],
    row: _FinestRow,
    parts: Sequence[Part],
    dimensions: tuple[str, ...],
) -> None:
    """Add one piece of a row to its groups: per operation if grouped by it, else summed."""
    if "operation" in dimensions:
        for operation, metrics in parts:
            _accumulator(groups, _group_key(row, operation, dimensions)).add(metrics, row)
    else:
        summed = tuple(map(sum, zip(*(metrics for _, metrics in parts), strict=True)))
        _accumulator(groups, _group_key(row, None, dimensions)).add(summed, row)


def _accumulator(groups: dict[GroupKey, _Accumulator], key: GroupKey) -> _Accumulator:
    accumulator = groups.get(key)
    if accumulator is None:
        accumulator = groups[key] = _Accumulator()
    return accumulator


def _group_key(row: _FinestRow, operation: str | None, dimensions: tuple[str, ...]) -> GroupKey:
    values: dict[str, str | None] = {
        "org_id": row.org_id,
        "api_key_id": row.api_key_id,
        "user_id": row.user_id,
        "session_kind": row.session_kind,
        "operation": operation,
        "provider": row.provider,
    }
    return tuple(values[dimension] for dimension in dimensions)


def _sortable(key: GroupKey) -> tuple[tuple[bool, str], ...]:
    """Sort order of group keys: by each value, a null after every string."""
    return tuple((value is None, value or "") for value in key)


def _max_optional(current: int | None, candidate: int | None) -> int | None:
    if candidate is None:
        return current
    if current is None:
        return candidate
    return max(current, candidate)


def _bucket_dict(start_time: int, end_time: int, results: list[JsonObject]) -> JsonObject:
    return {"object": "bucket", "start_time": start_time, "end_time": end_time, "results": results}


def _result_dict(dimensions: tuple[str, ...], key: GroupKey, acc: _Accumulator) -> JsonObject:
    """A SandboxUsageResult; dimensions not grouped by are null."""
    grouped = dict(zip(dimensions, key, strict=True))
    peak = acc.peak_memory_thousandths
    return {
        "object": RESULT_OBJECT,
        **dict(zip(METRICS, acc.totals, strict=True)),
        "peak_memory_mib": None if peak is None else Decimal(peak).scaleb(-3),
        "reserved_memory_mib": acc.reserved_memory_mib,
        "user_id": grouped.get("user_id"),
        "api_key_id": grouped.get("api_key_id"),
        "org_id": grouped.get("org_id"),
        "operation": grouped.get("operation"),
        "provider": grouped.get("provider"),
        "session_kind": grouped.get("session_kind"),
    }


# --------------------------------------------------------------------------- the endpoint


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
_Entry = tuple[int, int, tuple[GroupKey, _Accumulator] | None]


class UsageEmulator:
    """Answers usage requests like the MKA1 API: auth, validation (422), pagination.

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
            self.usage._grouped_buckets(
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
        _window_bucket_width(start_time, end_time, bucket_width)
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
            buckets.append(_bucket_dict(start, end, []))
        if group is not None:
            buckets[-1]["results"].append(_result_dict(dimensions, *group))
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
) -> Iterator[str]:
    """Serve in a daemon thread; yield the base URL, e.g. 'http://127.0.0.1:54321'."""
    emulator = UsageEmulator(
        SyntheticUsage(orgs, seed), page_size=page_size, api_key=api_key, faults=faults
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
