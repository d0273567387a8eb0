"""Deterministic synthetic sandbox usage: heavy-tailed orgs, exact time splits, any grouping."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

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


class Accumulator:
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


GroupedBucket = tuple[int, int, list[tuple[GroupKey, Accumulator]]]


class SyntheticUsage:
    """Deterministic synthetic usage for N orgs; a pure function of (orgs, seed).

    `reported_until` (unix seconds) holds back the days from then on, as if their usage had not
    arrived yet: serve once with it and once without to produce late usage.
    """

    def __init__(self, orgs: int, seed: int, reported_until: int | None = None) -> None:
        if orgs < 0:
            raise ValueError("orgs must not be negative")
        self.orgs = orgs
        self.seed = seed
        self.reported_until = reported_until
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
        """Buckets (SandboxUsageBucket dicts with SandboxUsageResult lists) covering [start, end)
        snapped outwards to whole UTC buckets (see `snapped_window`).

        Raises ValueError for an unknown bucket width or dimension, an empty window, or a window
        of more than MAX_BUCKETS buckets. `org_ids=None` means every org.
        """
        dimensions = normalize_group_by(group_by)
        grouped = self.grouped_buckets(start_time, end_time, bucket_width, dimensions, org_ids)
        return [
            bucket_dict(start, end, [result_dict(dimensions, k, acc) for k, acc in groups])
            for start, end, groups in grouped
        ]

    def grouped_buckets(
        self,
        start_time: int,
        end_time: int,
        bucket_width: str,
        dimensions: tuple[str, ...],
        org_ids: Sequence[str] | None,
    ) -> list[GroupedBucket]:
        """The aggregated buckets, each with its (group key, accumulator) pairs sorted by key.

        Like the MKA1 API, the window is first snapped outwards to whole UTC buckets, so a first
        or last bucket may extend beyond [start, end) and then holds its whole bucket's usage.
        """
        width = window_bucket_width(start_time, end_time, bucket_width)
        start_time, end_time = snapped_window(start_time, end_time, width)
        buckets: dict[int, dict[GroupKey, Accumulator]] = {
            bucket_start: {} for bucket_start in _bucket_starts(start_time, end_time, width)
        }
        for profile in self._selected_profiles(org_ids):
            for day_start in _day_starts(start_time, end_time):
                if self.reported_until is not None and day_start >= self.reported_until:
                    continue
                for row in _day_rows(self.seed, profile, day_start):
                    pieces = _time_pieces(row, profile, day_start, start_time, end_time, width)
                    for piece_start, parts in pieces:
                        groups = buckets[piece_start - piece_start % width]
                        _add_parts(groups, row, parts, dimensions)
        return [
            (
                bucket_start,
                bucket_start + width,
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


def window_bucket_width(start_time: int, end_time: int, bucket_width: str) -> int:
    """The bucket width in seconds, after checking the window suits it."""
    if bucket_width not in BUCKET_WIDTHS:
        raise ValueError(f"bucket_width must be one of {', '.join(BUCKET_WIDTHS)}")
    width = BUCKET_WIDTHS[bucket_width]
    if end_time <= start_time:
        raise ValueError("end_time must be greater than start_time")
    if (end_time - start_time) // width > MAX_BUCKETS:
        raise ValueError(f"the window holds more than {MAX_BUCKETS} buckets")
    return width


def snapped_window(start_time: int, end_time: int, width: int) -> tuple[int, int]:
    """[start, end) widened to whole UTC buckets: start snapped down, end snapped up.

    The MKA1 SDK documents this for `GET /api/v1/sandbox/usage`: buckets are calendar-aligned
    in UTC, so the first and last buckets may extend beyond the requested range.
    """
    return start_time - start_time % width, end_time + -end_time % width


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
    groups: dict[GroupKey, Accumulator],
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


def _accumulator(groups: dict[GroupKey, Accumulator], key: GroupKey) -> Accumulator:
    accumulator = groups.get(key)
    if accumulator is None:
        accumulator = groups[key] = Accumulator()
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


def bucket_dict(start_time: int, end_time: int, results: list[JsonObject]) -> JsonObject:
    return {"object": "bucket", "start_time": start_time, "end_time": end_time, "results": results}


def result_dict(dimensions: tuple[str, ...], key: GroupKey, acc: Accumulator) -> JsonObject:
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
