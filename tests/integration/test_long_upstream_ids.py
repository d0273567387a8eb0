"""Upstream ids longer than 255 characters close on both databases: stored whole, read back
equal, in files with short, distinct names; and the migrations still match the tables."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlmodel import Session

from billing.close.inline import close_period
from billing.config import Settings
from billing.db.engine import make_engine, upgrade_schema
from billing.db.snapshots import store_snapshot_page
from billing.db.tables import BillingRun, metadata
from billing.domain import UsageRecord
from billing.errors import StorageError
from billing.periods import BillingPeriod
from billing.usage.emulator import UsageEmulator, serve_emulator
from billing.usage.synthetic import SyntheticUsage
from tests.support.agreement import rows

NOW = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)

PERIOD = BillingPeriod.parse("2026-10")
# Longer than the former VARCHAR(255) columns; the synthetic usage makes each org's API keys
# `key-<org>-N` and users `user-<org>-N`, so those are longer still. The first two share
# their first 80 characters (where file names are cut); the last is not a safe file name.
LONG_IDS = ["o" * 300 + "-1", "o" * 300 + "-2", "ö/" * 160]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class _LongIdUsage(SyntheticUsage):
    """The emulator's synthetic usage under LONG_IDS instead of org-0001, org-0002, ..."""

    def org_ids(self) -> list[str]:
        return LONG_IDS[: self.orgs]


@contextmanager
def _long_id_upstream() -> Iterator[str]:
    server = serve_emulator(UsageEmulator(_LongIdUsage(len(LONG_IDS), seed=4)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _directory(folder: Path) -> Path:
    """The org directory: the first long id has a contact (so its email is written as a file)."""
    path = folder / "orgs.yaml"
    path.write_text(
        "default_rate_card: standard\n"
        "orgs:\n"
        f'  - org_id: "{LONG_IDS[0]}"\n'
        "    name: Long Id Ltd\n"
        "    email: [billing@long.example]\n",
        encoding="utf-8",
    )
    return path


def test_a_close_with_ids_longer_than_255_characters_stores_them_whole(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    with _long_id_upstream() as base_url:
        settings = make_settings(
            database_url=database_url,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("t"),
            orgs=_directory(tmp_path),
            render_processes=1,
        )
        result = close_period(settings, PERIOD)

    assert sorted(s.org_id for s in result.statements) == sorted(LONG_IDS)
    stored_orgs = {org for (org,) in rows(database_url, "SELECT org_id FROM invoice")}
    assert stored_orgs == set(LONG_IDS)
    # An org without a directory entry is named by its id: the name is stored whole too.
    names = {row[0]: row[1] for row in rows(database_url, "SELECT org_id, org_name FROM invoice")}
    assert names[LONG_IDS[2]] == LONG_IDS[2]
    snapshot_orgs = {o for (o,) in rows(database_url, "SELECT DISTINCT org_id FROM usage_snapshot")}
    assert snapshot_orgs == set(LONG_IDS)
    keys = rows(database_url, "SELECT DISTINCT api_key_id, user_id FROM invoice_line")
    assert keys
    for key, user in keys:
        org = next(o for o in LONG_IDS if str(key).startswith(f"key-{o}-"))
        assert user is None or str(user).startswith(f"user-{org}-")
    assert {len(str(user)) > 300 for _key, user in keys if user is not None} == {True}
    delivered = rows(database_url, "SELECT org_id FROM email_delivery")
    assert delivered == [(LONG_IDS[0],)]

    files = [path for path in result.folder.rglob("*") if path.is_file()]
    statements = [path for path in files if path.suffix in (".pdf", ".csv")]
    per_org = [path for path in statements if path.stem not in REPORTS]
    assert len(per_org) == 2 * len(LONG_IDS)  # one PDF and one CSV each, none overwritten
    assert len({path.stem for path in per_org}) == len(LONG_IDS)
    assert [path.suffix for path in files if path.parent.name == "emails"] == [".eml"]
    assert all(len(path.name) <= 100 for path in files)
    assert all(path.parent in (result.folder, result.folder / "emails") for path in files)


REPORTS = {"summary", "changes", "allocation", "focus"}


def test_the_migrated_schema_matches_the_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade_schema(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []


@pytest.mark.postgres
def test_an_id_beyond_what_postgresql_can_index_is_one_storage_error(pg_url: str) -> None:
    """Past about 2,700 bytes (incompressible) a btree index entry cannot hold an id: the
    snapshot store says so in one line instead of a driver traceback, and stores nothing."""
    huge = "org-" + secrets.token_hex(4_000)
    record = UsageRecord(
        bucket_start=1_790_812_800,
        bucket_end=1_790_899_200,
        org_id=huge,
        api_key_id=None,
        user_id=None,
        duration_ms=1_000,
        reserved_memory_mib=None,
        peak_memory_mib=None,
        workspace_bytes_in=0,
        workspace_bytes_out=0,
        num_sessions=1,
        request_count=1,
        num_operations=1,
        files_changed_count=0,
        oom_killed_count=0,
        session_kind=None,
    )
    engine = make_engine(pg_url)
    upgrade_schema(engine)
    try:
        with Session(engine) as session:
            run = BillingRun(
                period="2026-10", status="running", trigger="test", started_at=NOW, upstream_url="x"
            )
            session.add(run)
            session.commit()
            assert run.id is not None
            run_id = run.id
        with pytest.raises(StorageError) as refused, Session(engine) as session, session.begin():
            store_snapshot_page(session, run_id, 1, [record])
        message = str(refused.value)
        assert "\n" not in message
        assert "too long for PostgreSQL to index in usage_snapshot" in message
        assert huge not in message
    finally:
        engine.dispose()
    assert rows(pg_url, "SELECT count(*) FROM usage_snapshot") == [(0,)]
