"""Engines and migrations: one place that turns a URL into a working, migrated database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from alembic import command
from billing.config import PROJECT_ROOT, Settings
from billing.errors import ConfigError, StorageError

MIGRATIONS = PROJECT_ROOT / "alembic"


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for a database URL; SQLite gets foreign keys, WAL and a busy timeout."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError(f"BILLING_DATABASE_URL {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest migration (the schema is never made by create_all)."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as error:
        raise StorageError(
            f"cannot migrate the database at {engine.url.render_as_string(hide_password=True)}: "
            f"{str(error.orig).strip().splitlines()[0]}"
        ) from None


def ledger_engine(url: str, *, migrate: bool = True) -> Engine:
    """The ledger's engine, migrated to the newest schema first when `migrate` is on."""
    engine = make_engine(url)
    if migrate:
        upgrade_schema(engine)
    return engine


def open_ledger(settings: Settings, *, migrate: bool | None = None) -> Engine:
    """The one way to open the ledger: the engine for BILLING_DATABASE_URL, migrated to the
    newest schema first when BILLING_AUTO_MIGRATE is on (or `migrate` says so)."""
    return ledger_engine(
        settings.database_url, migrate=settings.auto_migrate if migrate is None else migrate
    )


@contextmanager
def ledger(settings: Settings, *, migrate: bool | None = None) -> Iterator[Engine]:
    """The ledger's engine for the length of a `with` block, disposed at its end."""
    engine = open_ledger(settings, migrate=migrate)
    try:
        yield engine
    finally:
        engine.dispose()


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
