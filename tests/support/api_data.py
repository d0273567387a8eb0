"""A ledger for the REST API's tests: September closed and sent, October drafted, five orgs (one
named like a script), and a token of each role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import SecretStr

from billing.close.inline import close_period
from billing.close.steps import CloseOptions
from billing.config import Settings
from billing.finance.access import create_token
from billing.periods import BillingPeriod
from billing.states import Role
from billing.usage.emulator import running_emulator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEPTEMBER = BillingPeriod.parse("2026-09")
OCTOBER = BillingPeriod.parse("2026-10")
SCRIPT_NAME = "<script>alert(1)</script>"
SCRIPTED_ORG = "org-0004"  # the standard card, no discount: named SCRIPT_NAME here


@dataclass(frozen=True)
class Tokens:
    """One live bearer token per role."""

    viewer: str
    approver: str
    admin: str


def org_directory(folder: Path) -> Path:
    """The example org directory with org-0004 renamed to a script tag."""
    directory = yaml.safe_load((EXAMPLES / "orgs.yaml").read_text(encoding="utf-8"))
    for entry in directory["orgs"]:
        if entry["org_id"] == SCRIPTED_ORG:
            entry["name"] = SCRIPT_NAME
    path = folder / "orgs.yaml"
    path.write_text(yaml.safe_dump(directory, allow_unicode=True), encoding="utf-8")
    return path


def seed_ledger(settings: Settings) -> None:
    """Close September (finalized, emailed to files) and draft October for five orgs."""
    with running_emulator(orgs=5, seed=5, page_size=200) as base_url:
        upstream = settings.model_copy(
            update={"mka1_base_url": base_url, "mka1_api_key": SecretStr("t")}
        )
        close_period(upstream, SEPTEMBER, trigger="test")
        close_period(upstream, OCTOBER, trigger="test", options=CloseOptions(draft=True))


def tokens(settings: Settings) -> Tokens:
    now = lambda: datetime.now(UTC)  # noqa: E731
    made = {
        role: create_token(settings, f"{role.value}-bot", role, actor="test", now=now)
        for role in Role
    }
    return Tokens(made[Role.VIEWER], made[Role.APPROVER], made[Role.ADMIN])


def api_settings(build: object, tmp_path: Path, database_url: str, name: str = "a") -> Settings:
    """Settings of one ledger for these tests: its database, its own output folder, the org
    directory with the script-named org."""
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    assert callable(build)
    settings = build(
        database_url=database_url,
        output_dir=folder / "statements",
        orgs=org_directory(folder),
    )
    assert isinstance(settings, Settings)
    return settings
