"""First runs at once on an empty database: every `billing db upgrade` waits for the one that
migrates, then finds the schema current; none prints a traceback."""

from __future__ import annotations

import fcntl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from billing.db.engine import MIGRATION_LOCK_KEY, alembic_config
from tests.support.agreement import rows
from tests.support.processes import start_billing

RACERS = 3


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _finish(racers: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    results = []
    for racer in racers:
        _out, errors = racer.communicate(timeout=120)
        results.append((racer.returncode, errors))
    return results


def _wait_until(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@contextmanager
def _migration_lock_held_on_postgres(url: str) -> Iterator[Callable[[], int]]:
    """Hold the migrations' advisory lock; yields a count of the sessions waiting for it."""
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))

        def waiting() -> int:
            with psycopg.connect(url, autocommit=True) as probe:
                found = probe.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND NOT l.granted "
                    "AND d.datname = current_database()"
                ).fetchone()
            return int(found[0]) if found else 0

        yield waiting
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


@contextmanager
def _migration_lock_held_on_sqlite(database: Path) -> Iterator[Callable[[], int]]:
    """Hold the migrations' file lock; yields a count of the processes blocked on it."""
    lock_file = Path(f"{database}.migrate.lock")
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        inode = lock_file.stat().st_ino

        def waiting() -> int:
            lines = Path("/proc/locks").read_text().splitlines()
            return sum(
                1 for line in lines if "->" in line and line.split()[-3].endswith(f":{inode}")
            )

        yield waiting
        fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_first_runs_at_once_wait_for_one_migration_and_all_succeed(
    backend: str, pg_server_url: Callable[[], str], tmp_path: Path
) -> None:
    if backend == "postgres":
        url = pg_server_url()
        held = _migration_lock_held_on_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'billing.db'}"
        held = _migration_lock_held_on_sqlite(tmp_path / "billing.db")
    env = {"BILLING_DATABASE_URL": url}
    with held as waiting:
        racers = [start_billing("db", "upgrade", env=env, cwd=tmp_path) for _ in range(RACERS)]
        # While the lock is held, every first run waits for it; none makes the schema.
        _wait_until(
            lambda: waiting() == RACERS or any(r.poll() is not None for r in racers),
            "the upgrades neither waited nor ended",
        )
        assert [racer.poll() for racer in racers] == [None] * RACERS, _finish(racers)
    results = _finish(racers)
    assert [code for code, _errors in results] == [0] * RACERS, results
    assert all("Traceback" not in errors for _code, errors in results)
    assert rows(url, "SELECT version_num FROM alembic_version") == [(_head(),)]
