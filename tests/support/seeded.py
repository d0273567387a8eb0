"""Seeded ledgers (seed_ledger's) built once per process and backend, then cloned per test."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from pydantic import SecretStr
from sqlalchemy import String, func, select, update
from sqlalchemy.engine import URL, make_url
from sqlmodel import SQLModel, col

from billing.config import Settings
from billing.db import engine as engine_module
from billing.db.engine import make_engine, normalise_url
from billing.db.tables import EmailDelivery
from tests.support.api_data import seed_ledger

# Where a seeded ledger names a path of its own: the file backend's .eml path, as the reply.
PATH_COLUMNS = {("email_delivery", "server_reply")}
MOVED = {"database_url", "output_dir"}  # what each clone has of its own


@dataclass(frozen=True)
class Golden:
    """One seeded ledger, never opened again once built: its database and output folder."""

    database_url: str
    output_dir: Path


@dataclass
class SeededLedgers:
    """Golden ledgers by backend and settings (those files' contents, not their paths), each
    built on first use under `root` with seed_ledger; `seed` clones one into a test's own
    fresh database and output folder.

    On PostgreSQL the clone takes the name of the test's empty database, which is renamed
    aside, never opened, for pg_server_url to hand out next (`spare`): a DROP DATABASE mid-run
    would force a checkpoint of the whole server. `close` drops the goldens and spares left."""

    root: Path
    goldens: dict[str, Golden] = field(default_factory=dict)
    databases: list[tuple[URL, str]] = field(default_factory=list)
    spares: list[str] = field(default_factory=list)

    def seed(self, settings: Settings) -> None:
        """What seed_ledger(settings) leaves, for a fresh database (never opened) and output
        folder."""
        key = golden_key(settings)
        golden = self.goldens.get(key) or self._build(settings)
        self.goldens[key] = golden
        target = make_url(normalise_url(settings.database_url))
        if target.get_backend_name() == "sqlite":
            clone_sqlite(golden, Path(str(target.database)))
        else:
            self._clone_postgres(golden, target)
        shutil.copytree(golden.output_dir, settings.output_dir)
        own_paths(settings, golden)

    def _build(self, settings: Settings) -> Golden:
        folder = self.root / uuid.uuid4().hex[:12]
        url = make_url(normalise_url(settings.database_url))
        on_sqlite = url.get_backend_name() == "sqlite"
        database = str(folder / "billing.db") if on_sqlite else database_name("golden")
        if not on_sqlite:
            admin_execute(url, f'CREATE DATABASE "{database}"')
            self.databases.append((url, database))
        database_url = url.set(database=database).render_as_string(hide_password=False)
        golden = Golden(database_url, folder / "out")
        inputs = folder / "inputs"  # the seed reads copies, not the first test's files
        inputs.mkdir(parents=True)
        moved: dict[str, object] = {"database_url": database_url, "output_dir": golden.output_dir}
        for name, path in own_files(settings).items():
            moved[name] = shutil.copyfile(path, inputs / f"{name}{path.suffix}")
        seed_ledger(settings.model_copy(update=moved))
        let_go(database_url)
        stored = columns_naming(database_url, str(folder))
        assert stored <= PATH_COLUMNS, f"the seeded ledger stores its own paths in {stored}"
        files = [path for path in golden.output_dir.rglob("*") if path.is_file()]
        named = [path.name for path in files if str(folder).encode() in path.read_bytes()]
        assert not named, f"the seeded files name their own paths: {named}"
        if not on_sqlite:  # nobody may ever hold a template open: the clones would fail
            admin_execute(url, f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
        return golden

    def _clone_postgres(self, golden: Golden, target: URL) -> None:
        """The golden copied under the name of the test's empty database, set aside first."""
        spare = database_name("spare")
        admin_execute(target, f'ALTER DATABASE "{target.database}" RENAME TO "{spare}"')
        self.databases.append((target, spare))
        self.spares.append(spare)
        source = make_url(golden.database_url).database
        admin_execute(target, f'CREATE DATABASE "{target.database}" TEMPLATE "{source}"')

    def spare(self) -> str | None:
        """An empty database set aside by `seed`, never opened (None: there is none); whoever
        takes it renames it and drops it in the end."""
        if not self.spares:
            return None
        name = self.spares.pop()
        self.databases = [(url, kept) for url, kept in self.databases if kept != name]
        return name

    def close(self) -> None:
        """Drop the goldens and the spares nobody took."""
        for url, name in self.databases:
            admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(kind: str) -> str:
    """A name for a PostgreSQL database of this process, like pg_server_url's."""
    return f"billing_test_{os.getpid()}_{kind}_{uuid.uuid4().hex[:8]}"


def own_files(settings: Settings) -> dict[str, Path]:
    """The settings' paths that are files (the org directory, cost centres...): each test
    writes its own, so goldens are told apart by their contents."""
    return {
        name: value
        for name in Settings.model_fields
        if name not in MOVED and isinstance(value := getattr(settings, name), Path)
        if value.is_file()
    }


def golden_key(settings: Settings) -> str:
    """The backend (PostgreSQL: its server) and every setting but the database and output
    folder, with each file setting's contents in place of its path."""
    url = make_url(normalise_url(settings.database_url))
    files = own_files(settings)
    values: dict[str, object] = {"server": url.set(database="").render_as_string()}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in files:
            value = hashlib.sha256(files[name].read_bytes()).hexdigest()
        elif isinstance(value, SecretStr):
            value = value.get_secret_value()
        if name not in MOVED:
            values[name] = value
    return json.dumps(values, sort_keys=True, default=str)


def admin_execute(url: URL, sql: str) -> None:
    """One statement on the postgres database of `url`'s server, outside a transaction."""
    server = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(sql)


def let_go(database_url: str) -> None:
    """Close an engine this process keeps for the golden (keep_engines): it is never used
    again, and PostgreSQL copies a template only while nobody is connected to it."""
    kept = engine_module._kept_engines
    if kept is not None and database_url in kept:
        kept.pop(database_url).dispose()
        engine_module._migrated_urls.discard(database_url)


def columns_naming(database_url: str, text: str) -> set[tuple[str, str]]:
    """The (table, column) pairs with a string value that contains `text`."""
    found: set[tuple[str, str]] = set()
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            for table in SQLModel.metadata.sorted_tables:
                for column in table.columns:
                    if isinstance(column.type, String):
                        hits = select(func.count()).where(column.contains(text, autoescape=True))
                        if connection.execute(hits.select_from(table)).scalar():
                            found.add((table.name, column.name))
    finally:
        engine.dispose()
    return found


def clone_sqlite(golden: Golden, path: Path) -> None:
    """The golden file copied page by page through SQLite (its WAL included)."""
    assert not path.exists(), f"{path}: seeding wants a fresh database"
    path.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(str(make_url(golden.database_url).database))
    target = sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def own_paths(settings: Settings, golden: Golden) -> None:
    """The clone's stored paths (PATH_COLUMNS) moved from the golden's output folder to the
    test's, as seeding there would have written them."""
    engine = make_engine(settings.database_url)
    reply = col(EmailDelivery.server_reply)
    old, new = str(golden.output_dir), str(settings.output_dir)
    try:
        with engine.begin() as connection:
            moved = func.replace(reply, old, new)
            connection.execute(
                update(EmailDelivery)
                .where(reply.startswith(old, autoescape=True))
                .values(server_reply=moved)
            )
    finally:
        engine.dispose()
