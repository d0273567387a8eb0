"""The webhook endpoints file (BILLING_WEBHOOKS): YAML -> strict pydantic -> endpoints."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from billing.catalog.yamlsource import YamlSource, read_yaml
from billing.errors import ConfigError
from billing.states import WebhookEventType

# A name is printed by `billing webhooks status` and stored on every delivery (100 at most).
EndpointName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
MIN_SECRET_LENGTH = 16
ALL_NAMES = tuple(str(kind) for kind in WebhookEventType)


class EndpointSpec(BaseModel):
    """One endpoint: where events go, the secret they are signed with, which events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: EndpointName
    url: str
    secret: SecretStr | None = None
    secret_env: EnvName | None = None
    events: list[WebhookEventType] = Field(min_length=1)

    @field_validator("events", mode="before")
    @classmethod
    def _star_is_every_event(cls, value: object) -> object:
        if value == "*":
            return list(WebhookEventType)
        if isinstance(value, str):
            raise ValueError(f'must be "*" or a list of event types ({", ".join(ALL_NAMES)})')
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(char.isspace() for char in value):
            raise ValueError("must not contain spaces (percent-encode them)")
        return value

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("secret_env")
    @classmethod
    def _variable_set(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = os.environ.get(value)
        if not found:
            raise ValueError(f"environment variable {value} is not set (or is empty)")
        if len(found) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"environment variable {value} holds fewer than {MIN_SECRET_LENGTH} characters"
            )
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> EndpointSpec:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret and secret_env")
        return self


class WebhooksSpec(BaseModel):
    """The file: a list of endpoints under `endpoints:` (an empty list: no endpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[EndpointSpec] = []


@dataclass(frozen=True)
class WebhookEndpoint:
    """An endpoint as the sender uses it; the secret is never printed (repr hides it)."""

    name: str
    url: str
    secret: SecretStr
    events: frozenset[WebhookEventType]

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


def _endpoint(spec: EndpointSpec) -> WebhookEndpoint:
    if spec.secret is not None:
        secret = spec.secret
    else:
        assert spec.secret_env is not None
        secret = SecretStr(os.environ[spec.secret_env])
    return WebhookEndpoint(spec.name, spec.url, secret, frozenset(spec.events))


def _read(path: Path) -> tuple[list[WebhookEndpoint], list[str]]:
    if not path.is_file():
        raise ConfigError(
            f"{path}: webhook endpoints file not found; fix BILLING_WEBHOOKS or unset it"
        )
    source: YamlSource = read_yaml(path)
    data = {} if source.data is None else source.data
    if not isinstance(data, dict):
        return [], [f"{path}:1: field (top level): must be a mapping with an endpoints: list"]
    try:
        spec = WebhooksSpec.model_validate(data)
    except ValidationError as error:
        return [], source.problems(error)
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(spec.endpoints):
        if entry.name in seen:
            where = source.where(("endpoints", index, "name"))
            problems.append(
                f"{where}: field endpoints.{index}.name: endpoint {entry.name!r} is listed "
                f"twice (first as endpoints.{seen[entry.name]})"
            )
        seen.setdefault(entry.name, index)
    return [_endpoint(entry) for entry in spec.endpoints], problems


def check_webhooks(path: Path) -> list[str]:
    """Every problem of the endpoints file, each as `file:line: field: message`."""
    try:
        return _read(path)[1]
    except ConfigError as error:
        return [str(error)]


def load_webhooks(path: Path) -> tuple[WebhookEndpoint, ...]:
    """The endpoints of a BILLING_WEBHOOKS file; any problem is one ConfigError naming the
    file, line and field (and how many more there are)."""
    endpoints, problems = _read(path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(f"{problems[0]}{more}")
    return tuple(endpoints)


def subscriptions(endpoints: Sequence[WebhookEndpoint]) -> list[tuple[str, str, frozenset[str]]]:
    """(name, url, event types) of each endpoint: what the outbox fans events out to."""
    return [
        (endpoint.name, endpoint.url, frozenset(str(kind) for kind in endpoint.events))
        for endpoint in endpoints
    ]
