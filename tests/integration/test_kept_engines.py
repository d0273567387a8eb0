"""A worker process keeps one migrated engine per database across its tasks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from billing.config import Settings
from billing.db import engine as engine_module
from billing.db.engine import current_revision, keep_engines, ledger, newest_revision


def test_a_process_that_keeps_engines_opens_and_migrates_each_database_once(
    make_settings: Callable[..., Settings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(engine_module, "_kept_engines", None)  # as a fresh process
    monkeypatch.setattr(engine_module, "_migrated_urls", set())
    settings = make_settings(database_url=database_url)
    with ledger(settings, migrate=False) as passing:
        assert current_revision(passing) is None
    assert passing.pool.checkedout() == 0
    keep_engines()
    upgrades: list[str] = []
    real_upgrade = engine_module.upgrade_schema
    monkeypatch.setattr(
        engine_module,
        "upgrade_schema",
        lambda engine: upgrades.append(str(engine.url)) or real_upgrade(engine),
    )
    with ledger(settings, migrate=False) as first:
        assert current_revision(first) is None  # not migrated when it was not asked to be
    with ledger(settings) as second, ledger(settings) as third:
        assert second is first
        assert third is first
        assert current_revision(second) == newest_revision()
    assert len(upgrades) == 1  # migrated once, on the first task that wanted it
    other = make_settings(database_url=f"sqlite:///{tmp_path / 'other.db'}")
    with ledger(other) as elsewhere:
        assert elsewhere is not first  # one engine per database
        assert current_revision(elsewhere) == newest_revision()
    assert len(upgrades) == 2
    elsewhere.dispose()
    first.dispose()
