"""The unit layer's rule, enforced: no database, no network.

Every unit test (its fixtures' setup and teardown too) runs with these refused:
- a TCP/UDP socket connecting, binding or sending (loopback servers included), so no HTTP, SMTP,
  Redis or emulator, in this process;
- a SQLAlchemy engine being created, and a psycopg connection being opened, so no ledger on
  SQLite or PostgreSQL.

Allowed: files under tmp_path, child processes (a process pool, a killed writer, pdftoppm), their
pipes and Unix-domain sockets (multiprocessing's own plumbing), and sqlite3 used directly as a
private scratch file (the result index's spill) - none of them is a service or the ledger.
A test that needs what is refused belongs in tests/integration or tests/e2e.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.unit_guard import no_network_no_database

UNIT = Path(__file__).resolve().parent


def _is_unit(item: pytest.Item) -> bool:
    return UNIT in Path(str(item.path)).resolve().parents


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    if not _is_unit(item):
        return (yield)
    with no_network_no_database():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    if not _is_unit(item):
        return (yield)
    with no_network_no_database():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    # After the last unit test (or before another layer's) the session's own fixtures are torn
    # down too, such as the dropping of throwaway PostgreSQL databases: not the unit test's doing.
    if not _is_unit(item) or nextitem is None or not _is_unit(nextitem):
        return (yield)
    with no_network_no_database():
        return (yield)
