"""The upstream contract (GET /api/v1/sandbox/usage) as strict pydantic models."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

Count = Annotated[StrictInt, Field(ge=0)]

Operation = Literal[
    "session_start",
    "session_stop",
    "session_terminate",
    "turn",
    "repo_task",
    "command",
    "code",
    "workspace_manifest",
    "workspace_download",
    "workspace_archive_download",
    "workspace_upload",
    "workspace_archive_upload",
]
SessionKind = Literal["standard", "browser"]
BucketWidth = Literal["1m", "1h", "1d"]
GROUP_BY_DIMENSIONS = ("org_id", "api_key_id", "user_id", "session_kind", "operation", "provider")


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UsageResultModel(_Contract):
    object: Literal["organization.usage.sandbox.result"] = "organization.usage.sandbox.result"
    num_operations: Count = 0
    num_sessions: Count = 0
    request_count: Count = 0
    duration_ms: Count = 0
    workspace_bytes_in: Count = 0
    workspace_bytes_out: Count = 0
    files_changed_count: Count = 0
    oom_killed_count: Count = 0
    peak_memory_mib: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = None
    reserved_memory_mib: Count | None = None
    user_id: StrictStr | None = None
    api_key_id: StrictStr | None = None
    org_id: StrictStr | None = None
    operation: Operation | None = None
    provider: StrictStr | None = None
    session_kind: SessionKind | None = None


class UsageBucketModel(_Contract):
    object: Literal["bucket"] = "bucket"
    start_time: StrictInt
    end_time: StrictInt
    results: list[UsageResultModel] = Field(default_factory=list)


class UsagePageModel(_Contract):
    object: Literal["page"] = "page"
    data: list[UsageBucketModel] = Field(default_factory=list)
    has_more: StrictBool = False
    next_page: StrictStr | None = None
