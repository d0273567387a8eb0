"""The upstream contract as msgspec structs: one pass from bytes to validated results.

The pydantic models of billing.usage.contract stay the contract: a page is read here only when
they would accept it with the same values (strict integers, exact Decimals from the number's
own digits, the same literals); anything else, invalid JSON included, is left to them, so their
error messages and their leniencies are unchanged.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from billing.usage.contract import Operation, SessionKind, UsagePageModel

Count = Annotated[int, msgspec.Meta(ge=0)]


class UsageResult(msgspec.Struct, kw_only=True, gc=False):
    """One usage result (the fields of UsageResultModel, in its order, then its bucket's bounds
    as the client sets them)."""

    object: Literal["organization.usage.sandbox.result"] = "organization.usage.sandbox.result"
    num_operations: Count = 0
    num_sessions: Count = 0
    request_count: Count = 0
    duration_ms: Count = 0
    workspace_bytes_in: Count = 0
    workspace_bytes_out: Count = 0
    files_changed_count: Count = 0
    oom_killed_count: Count = 0
    peak_memory_mib: Decimal | None = None
    reserved_memory_mib: Count | None = None
    user_id: str | None = None
    api_key_id: str | None = None
    org_id: str | None = None
    operation: Operation | None = None
    provider: str | None = None
    session_kind: SessionKind | None = None
    # The bounds of the result's bucket, which the client sets so that a page's results become
    # usage records in one msgspec.convert. Not upstream fields: their JSON names are ones no
    # upstream sends (and a value read from one would be overwritten before it is used).
    bucket_start: int = msgspec.field(default=0, name="__billing_bucket_start__")
    bucket_end: int = msgspec.field(default=0, name="__billing_bucket_end__")


class UsageBucket(msgspec.Struct, kw_only=True, gc=False):
    """One time bucket and its results."""

    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    results: list[UsageResult] = []


class UsagePageData(msgspec.Struct, kw_only=True):
    """One page of buckets and its cursor."""

    object: Literal["page"] = "page"
    data: list[UsageBucket] = []
    has_more: bool = False
    next_page: str | None = None


_DECODER = msgspec.json.Decoder(UsagePageData)


def decode_page(content: bytes) -> UsagePageData | None:
    """The page, or None when the pydantic contract must judge it (it may still accept it)."""
    try:
        page = _DECODER.decode(content)
    except msgspec.DecodeError:  # a ValidationError too
        return None
    for bucket in page.data:
        for result in bucket.results:
            peak = result.peak_memory_mib
            # msgspec reads "NaN" and "Infinity" (as text) and has no bound for Decimals.
            if peak is not None and not (peak.is_finite() and peak >= 0):
                return None
    return page


def page_from_model(model: UsagePageModel) -> UsagePageData:
    """A page the pydantic contract accepted, as the structs the client reads."""
    return msgspec.convert(model.model_dump(), UsagePageData)
