"""One writer per period: a PostgreSQL advisory lock, or a file lock beside the SQLite file.

Both are held by the process and vanish with it, so a killed close never leaves a stale lock;
the run row it left as `running` is then known to be dead and the next close takes over.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, text
from sqlmodel import Session

from billing.db.repository import describe_running_run, interrupt_running_runs
from billing.errors import PeriodBusy

POLL_SECONDS = 0.2  # float-ok: a sleep between lock attempts


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def period_lock(
    engine: Engine,
    period: str,
    *,
    wait_seconds: float = 0.0,  # float-ok: a timeout
    holder: Callable[[], str] = lambda: "",
) -> Iterator[None]:
    """Hold the lock of one period for the duration of the block.

    Waits up to `wait_seconds` for another holder to finish, then raises PeriodBusy naming
    what holds it (`holder()` describes the running run).
    """
    name = f"billing-period:{period}"
    deadline = time.monotonic() + wait_seconds

    def busy() -> PeriodBusy:
        return PeriodBusy(
            f"another close, finalize or re-rate of {period} is running{holder()}; "
            f"wait for it to finish, or run again with --wait SECONDS"
        )

    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            key = _advisory_key(name)
            while not connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
            ).scalar_one():
                connection.rollback()
                if time.monotonic() >= deadline:
                    raise busy()
                time.sleep(POLL_SECONDS)
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(f"{database}.{period}.lock")
    with lock_path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise busy() from None
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits at the end of the block, all or nothing.

    On SQLite it starts with BEGIN IMMEDIATE, so two writers queue on the database lock instead
    of failing when one upgrades a read to a write.
    """
    with Session(engine) as session:
        if engine.dialect.name == "sqlite":
            session.connection().exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def hold_period(
    engine: Engine,
    period: str,
    wait_seconds: float,  # float-ok: a timeout
    say: Callable[[str], None],
    now: Callable[[], datetime],
) -> Iterator[None]:
    """Hold the period's lock; runs of it left `running` by a dead process become interrupted."""

    def holder() -> str:
        with Session(engine) as session:
            return describe_running_run(session, period)

    with period_lock(engine, period, wait_seconds=wait_seconds, holder=holder):
        with write_transaction(engine) as session:
            for dead in interrupt_running_runs(session, period, now()):
                say(f"run {dead} of {period} stopped before it finished; this run takes over")
        yield
