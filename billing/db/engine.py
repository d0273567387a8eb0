"""Engines and migrations: one place that turns a URL into a working, migrated database."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from alembic import command
from billing.config import PROJECT_ROOT, Settings
from billing.errors import ConfigError, LedgerMissing, StorageError

MIGRATIONS = PROJECT_ROOT / "alembic"


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def parse_database_url(url: str) -> URL:
    """The parsed URL of a database this service can use (SQLite or PostgreSQL), or one line
    naming the setting and what to write instead."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError(f"BILLING_DATABASE_URL {url!r} is not a database URL") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise ConfigError(
            f"BILLING_DATABASE_URL {parsed.render_as_string(hide_password=True)!r}: "
            f"{parsed.get_backend_name()!r} databases are not supported; use "
            "sqlite:///billing.db or postgresql://user@host:5432/db"
        )
    return parsed


def make_engine(url: str) -> Engine:
    """An engine for a database URL; SQLite gets foreign keys, WAL and a busy timeout."""
    parsed = parse_database_url(url)
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


# The PostgreSQL advisory lock that migrations hold ("billing" in ASCII); the period locks of
# billing/db/locks.py use keys hashed from their names.
MIGRATION_LOCK_KEY = 0x62696C6C696E67


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest migration (the schema is never made by create_all).

    Migrations hold a lock of their own while they run: an advisory lock of the migration's
    transaction on PostgreSQL, a file lock beside a SQLite file. So two first runs at once
    never both make the schema: the second waits for the first, then finds it current.
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with _sqlite_migration_lock(engine), engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except OperationalError as error:
        raise StorageError(
            f"cannot migrate the database at {engine.url.render_as_string(hide_password=True)}: "
            f"{str(error.orig).strip().splitlines()[0]}"
        ) from None


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """An exclusive flock on `<database file>.migrate.lock` while a SQLite file is migrated
    (its own write lock does not serialise two migrations: the loser finds tables made)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with Path(f"{database}.migrate.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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


# A long-lived process (a Celery worker) keeps one engine per database URL across its tasks,
# migrated once, instead of an engine, a pool and a migration check per task (keep_engines).
_kept_engines: dict[str, Engine] | None = None
_migrated_urls: set[str] = set()


def keep_engines() -> None:
    """From now on, in this process, `ledger` hands out one engine per database URL, checked
    for migrations once and kept open (called when a Celery worker process starts)."""
    global _kept_engines
    if _kept_engines is None:
        _kept_engines = {}


def _kept_engine(settings: Settings, migrate: bool | None) -> Engine:
    assert _kept_engines is not None
    url = settings.database_url
    engine = _kept_engines.get(url)
    if engine is None:
        engine = _kept_engines[url] = make_engine(url)
    wanted = settings.auto_migrate if migrate is None else migrate
    if wanted and url not in _migrated_urls:
        upgrade_schema(engine)
        _migrated_urls.add(url)
    return engine


@contextmanager
def ledger(settings: Settings, *, migrate: bool | None = None) -> Iterator[Engine]:
    """The ledger's engine for the length of a `with` block, disposed at its end (in a process
    that keeps its engines, the process's engine for the URL, left open)."""
    if _kept_engines is not None:
        yield _kept_engine(settings, migrate)
        return
    engine = open_ledger(settings, migrate=migrate)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def existing_ledger(settings: Settings, *, newest_only: bool = True) -> Iterator[Engine]:
    """The ledger as it stands, for commands that only read: never created, never migrated;
    LedgerMissing (one line: which URL, what to run) when there is no database or schema, and
    a StorageError when its schema is older than this version's (unless not `newest_only`)."""
    parsed = parse_database_url(settings.database_url)
    shown = parsed.render_as_string(hide_password=True)
    todo = "run billing db upgrade (or billing close) first, or check BILLING_DATABASE_URL"
    database = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
    if on_disk and not Path(str(database)).expanduser().is_file():
        raise LedgerMissing(f"no ledger at {shown}: the file does not exist; {todo}")
    engine = make_engine(settings.database_url)
    try:
        try:
            revision = current_revision(engine)
        except OperationalError as error:
            first = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise StorageError(f"cannot open the ledger at {shown}: {first}; {todo}") from None
        if revision is None:
            raise LedgerMissing(f"no ledger at {shown}: the database has no billing schema; {todo}")
        if newest_only and revision != newest_revision():
            raise StorageError(
                f"the ledger at {shown} is at migration {revision}, not the newest "
                f"({newest_revision()}): run billing db upgrade"
            )
        yield engine
    finally:
        engine.dispose()


def newest_revision() -> str | None:
    """The head migration this version of the service ships."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: no schema yet); reads, never writes."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head
