"""Shared fixtures: per-test settings, SQLite files, and throwaway PostgreSQL databases."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from bench.support import pg_admin_user
from billing.config import Settings
from tests.support.print_memo import PrintMemo, memo_environment
from tests.support.seeded import SeededLedgers, admin_execute, database_name

pytest_plugins = ["tests.support.smtp_servers"]  # the smtp_server and raw_server fixtures

TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "integration", "e2e")  # the folders under tests/, each one marker

PG_HOST = os.environ.get("BILLING_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BILLING_TEST_PG_PORT", "5432"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the marker of its layer's folder: `-m unit`, `-m "not e2e"` select by it."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if TESTS not in path.parents:
            continue
        layer = path.relative_to(TESTS).parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(LAYERS)}}}/")
        item.add_marker(layer)


def _pg_admin_user() -> str:
    """The first of postgres/root that the trust-auth server accepts."""
    return pg_admin_user(PG_HOST, PG_PORT)


@pytest.fixture(scope="session")
def pg_server_url(seeded_ledgers: SeededLedgers) -> Iterator[Callable[[], str]]:
    """A factory of fresh throwaway databases on the real server (an empty one that seeding
    set aside, renamed, or a new one); all dropped at session end."""
    user = _pg_admin_user()
    server = make_url(f"postgresql://{user}@{PG_HOST}:{PG_PORT}/postgres")
    created: list[str] = []

    def create() -> str:
        name = database_name("db")
        spare = seeded_ledgers.spare()
        if spare is None:
            admin_execute(server, f'CREATE DATABASE "{name}"')
        else:
            admin_execute(server, f'ALTER DATABASE "{spare}" RENAME TO "{name}"')
        created.append(name)
        return server.set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        admin_execute(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server_url: Callable[[], str]) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return pg_server_url()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'billing.db'}"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: output under tmp_path, files backend, overrides by field name."""

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": f"sqlite:///{tmp_path / 'billing.db'}",
            "output_dir": tmp_path / "statements",
            "email_backend": "file",
            "broker_url": None,
            "mka1_max_attempts": 3,
            "mka1_api_key": SecretStr("test-key"),
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture(scope="session")
def seeded_ledgers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededLedgers]:
    """seed_ledger's ledger built once per process, backend and settings, cloned per test
    (`seeded_ledgers.seed(settings)`); its PostgreSQL copies dropped at session end."""
    ledgers = SeededLedgers(tmp_path_factory.mktemp("seeded"))
    yield ledgers
    ledgers.close()


@pytest.fixture(scope="session")
def print_memo(tmp_path_factory: pytest.TempPathFactory) -> PrintMemo | None:
    """The session's memo of printed PDFs, shared by its xdist workers (tests/support/
    print_memo.py); None with BILLING_TEST_PRINT_MEMO=0, when every print is a real one."""
    if os.environ.get("BILLING_TEST_PRINT_MEMO", "1") == "0":
        return None
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    return PrintMemo(base.parent / f"printed-{run}" if run else base / "printed")


@pytest.fixture(autouse=True)
def remembered_prints(
    request: pytest.FixtureRequest, print_memo: PrintMemo | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Integration and end-to-end tests print through the memo, and so do the processes they
    start; the unit layer, which tests printing itself, always prints for real."""
    if print_memo is not None and request.node.get_closest_marker("unit") is None:
        print_memo.install(monkeypatch.setattr)
        for name, value in memo_environment(print_memo.folder).items():
            monkeypatch.setenv(name, value)
