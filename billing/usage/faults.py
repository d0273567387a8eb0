"""Fault injection for the usage emulator: which page misbehaves, how, and how many times."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, cast, get_args

FaultKind = Literal[
    "429",  # Too Many Requests with the plan's Retry-After
    "500",  # Internal Server Error
    "503",  # Service Unavailable with the plan's Retry-After
    "drop",  # close the connection without a response
    "truncate",  # a 200 whose JSON body is cut in half (Content-Length matches the cut)
    "repeat-cursor",  # next_page points back at an earlier page, so a naive client loops
    "duplicate-page",  # the next page repeats this page's data under a fresh cursor
    "unknown-enum",  # the first result of the page has session_kind "quantum"
    "lose-result",  # the first result of the page is silently left out (lost upstream)
]
FAULT_KINDS: Final = frozenset(get_args(FaultKind))
# Faults answered before the page is computed, or instead of its normal body.
HTTP_FAULT_KINDS: Final = frozenset({"429", "500", "503", "drop", "truncate"})
# Faults that change the page's content or its cursor.
DATA_FAULT_KINDS: Final = FAULT_KINDS - HTTP_FAULT_KINDS
UNKNOWN_SESSION_KIND: Final = "quantum"

_SPEC = re.compile(r"(?P<kind>[a-z0-9-]+)@(?P<page>[0-9]+)(?:x(?P<times>[0-9]+|\*))?")
FAULT_SPEC_FORMAT: Final = "KIND@PAGE or KIND@PAGExTIMES"
FAULT_SPEC_HELP: Final = (
    f"{FAULT_SPEC_FORMAT}, e.g. 503@2x3 (three 503s on page 2), drop@1, truncate@3x*, "
    "429@2x2, 500@4, repeat-cursor@3, duplicate-page@2, unknown-enum@2, lose-result@1. "
    "Pages are 1-based; TIMES defaults to 1 and * means every time. "
    "Faults on the same page fire in the order given."
)


@dataclass(frozen=True, slots=True)
class PageFault:
    """One fault on one page (1-based), served `times` times (None: every time)."""

    kind: FaultKind
    page: int
    times: int | None = 1

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of {_kinds_text()}")
        if self.page < 1:
            raise ValueError(f"fault {self.kind}: page must be 1 or more, not {self.page}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"fault {self.kind}@{self.page}: times must be 1 or more")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """How the emulator misbehaves: a delay on every response and faults on chosen pages.

    `retry_after` is sent as the Retry-After header of 429 and 503 answers: delta seconds
    ("1") or an HTTP date; an empty string sends no header.
    """

    latency_seconds: float = 0.0
    retry_after: str = "1"
    page_faults: tuple[PageFault, ...] = ()

    def __post_init__(self) -> None:
        if self.latency_seconds < 0:
            raise ValueError("latency_seconds must not be negative")

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[str],
        latency_seconds: float = 0.0,
        retry_after: str = "1",
    ) -> FaultPlan:
        """A plan from command-line fault specs such as "503@2x3" (see FAULT_SPEC_HELP)."""
        faults = tuple(parse_fault(spec) for spec in specs)
        return cls(latency_seconds=latency_seconds, retry_after=retry_after, page_faults=faults)


def parse_fault(spec: str) -> PageFault:
    """A PageFault from "KIND@PAGE" or "KIND@PAGExTIMES"; ValueError naming a malformed spec."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        raise ValueError(f"fault {spec!r}: expected {FAULT_SPEC_FORMAT}, e.g. 503@2x3")
    kind = match["kind"]
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault {spec!r}: unknown kind {kind!r}; expected one of {_kinds_text()}")
    times_text = match["times"]
    times = None if times_text == "*" else int(times_text or 1)
    return PageFault(cast(FaultKind, kind), int(match["page"]), times)


def _kinds_text() -> str:
    return ", ".join(sorted(FAULT_KINDS))


@dataclass
class FaultInjector:
    """The plan's state while serving: how often each fault has fired (thread-safe)."""

    plan: FaultPlan
    _served: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, page: int, kinds: frozenset[str]) -> PageFault | None:
        """The first fault of the plan on `page` among `kinds` with uses left, using one up."""
        with self._lock:
            for index, fault in enumerate(self.plan.page_faults):
                if fault.page != page or fault.kind not in kinds:
                    continue
                served = self._served.get(index, 0)
                if fault.times is None or served < fault.times:
                    self._served[index] = served + 1
                    return fault
        return None

    def served(self) -> int:
        """How many faults have been served so far (latency not counted)."""
        with self._lock:
            return sum(self._served.values())
