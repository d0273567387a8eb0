"""Refused before anything is numbered or sent: `billing` processes exit 1 with one line, and
the ledger and the statement folders are as they were."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.periods import BillingPeriod
from tests.support.agreement import rows
from tests.support.processes import billing_command, emulator_process, run_billing

CLOSED = "2026-10"
RUNNING = str(BillingPeriod.containing(datetime.now(UTC)))
LEDGER = "SELECT id, number, status, total FROM invoice ORDER BY id"
RUNS = "SELECT id, operation, status FROM billing_run ORDER BY id"


@dataclass(frozen=True)
class ClosedLedger:
    """A ledger with October closed: its environment and folder."""

    env: dict[str, str]
    folder: Path
    database_url: str

    def image(self) -> tuple[object, ...]:
        """The invoices, the runs and every file under the folder but the database's own."""
        files = {
            str(path.relative_to(self.folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(self.folder.rglob("*"))
            if path.is_file() and ".db" not in path.name and path.name not in ("o", "e")
        }
        return rows(self.database_url, LEDGER), rows(self.database_url, RUNS), files


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClosedLedger]:
    folder = tmp_path_factory.mktemp("refusals")
    with emulator_process("--orgs", "2", "--seed", "3", "--page-size", "500") as upstream:
        database_url = f"sqlite:///{folder / 'billing.db'}"
        env = {
            "MKA1_BASE_URL": upstream,
            "MKA1_API_KEY": "test-key",
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(folder / "statements"),
            "BILLING_EMAIL_BACKEND": "file",
            "BILLING_BROKER_URL": "",
        }
        done = run_billing("close", "--period", CLOSED, env=env, cwd=folder)
        assert done.returncode == 0, done.stderr
        yield ClosedLedger(env, folder, database_url)


def assert_one_line(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert message in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["close", "--period", "2030-01"],
            {},
            "2030-01 has not begun",
        ),
        (
            ["close", "--period", RUNNING],
            {},
            f"{RUNNING} has not ended",
        ),
        (
            ["finalize", "--period", RUNNING],
            {},
            f"{RUNNING} has not ended",
        ),
        (
            ["rerate", "--period", RUNNING],
            {},
            f"{RUNNING} has not ended",
        ),
        (
            ["close", "--period", CLOSED],
            {"BILLING_LOCALE": "xx_YY"},
            "setting BILLING_LOCALE: 'xx_YY' is not a locale Babel knows",
        ),
        (
            ["close", "--period", CLOSED],
            {"BILLING_OUTPUT_DIR": "blocker/statements"},
            "blocker is a file, not a folder",
        ),
        (
            ["close", "--period", CLOSED],
            {"MKA1_API_KEY": ""},
            "setting MKA1_API_KEY is empty",
        ),
        (
            ["close", "--period", CLOSED, "--org", "org-nope"],
            {},
            "--org 'org-nope': no such org in the org directory",
        ),
        (
            ["close", "--period", CLOSED],
            {"BILLING_DATABASE_URL": "mysql://u:secret@localhost/billing"},
            "'mysql' databases are not supported",
        ),
    ],
)
def test_refused_runs_change_nothing(
    closed: ClosedLedger, args: list[str], env: dict[str, str], message: str
) -> None:
    (closed.folder / "blocker").write_text("")
    before = closed.image()
    numbered = [row[1] for row in rows(closed.database_url, LEDGER)]
    assert len(numbered) == 2
    assert all(numbered)
    done = run_billing(*args, env={**closed.env, **env}, cwd=closed.folder)
    assert_one_line(done, message)
    assert "secret" not in done.stderr
    assert closed.image() == before  # no invoice numbered, no run, no file written


def test_a_missing_api_key_is_said_before_the_api_is_called(closed: ClosedLedger) -> None:
    before = closed.image()
    env = {k: v for k, v in {**os.environ, **closed.env}.items() if k != "MKA1_API_KEY"}
    done = subprocess.run(
        billing_command("close", "--period", CLOSED),
        env=env,
        cwd=closed.folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line(done, "setting MKA1_API_KEY is not set")
    assert closed.image() == before


@pytest.mark.parametrize(
    ("port", "message"),
    [("70000", "--port 70000 is out of range"), ("-1", "--port -1 is out of range")],
)
def test_an_emulator_port_out_of_range_is_one_line(tmp_path: Path, port: str, message: str) -> None:
    done = run_billing("emulator", "--port", port, env={}, cwd=tmp_path)
    assert_one_line(done, message)


def test_an_emulator_port_in_use_is_one_line(tmp_path: Path) -> None:
    with emulator_process("--orgs", "1") as upstream:
        port = upstream.rsplit(":", 1)[1]
        done = run_billing("emulator", "--port", port, env={}, cwd=tmp_path)
    assert_one_line(done, f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize(
    "args",
    [
        ["invoices", "list"],
        ["invoices", "show", "1"],
        ["runs", "list"],
        ["runs", "show", "1"],
        ["email", "status", "--period", CLOSED],
    ],
)
def test_reading_commands_never_create_a_sqlite_ledger(tmp_path: Path, args: list[str]) -> None:
    database = tmp_path / "nested" / "billing.db"
    env = {"BILLING_DATABASE_URL": f"sqlite:///{database}"}
    done = run_billing(*args, env=env, cwd=tmp_path)
    assert_one_line(done, f"no ledger at sqlite:///{database}: the file does not exist; run")
    assert "billing db upgrade" in done.stderr
    assert list(tmp_path.iterdir()) == []  # neither the file nor its folder


@pytest.mark.postgres
def test_reading_commands_never_migrate_an_empty_postgresql_database(
    pg_url: str, tmp_path: Path
) -> None:
    done = run_billing("invoices", "list", env={"BILLING_DATABASE_URL": pg_url}, cwd=tmp_path)
    assert_one_line(done, "the database has no billing schema; run billing db upgrade")
    tables = rows(
        pg_url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert tables == []


def test_a_draft_of_the_running_month_is_month_to_date_and_unnumbered(tmp_path: Path) -> None:
    with emulator_process("--orgs", "2", "--seed", "3") as upstream:
        database_url = f"sqlite:///{tmp_path / 'billing.db'}"
        env = {
            "MKA1_BASE_URL": upstream,
            "MKA1_API_KEY": "test-key",
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
            "BILLING_BROKER_URL": "",
        }
        done = run_billing("close", "--period", RUNNING, "--draft", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{RUNNING} has not ended: these drafts are month-to-date" in done.stderr
    stored = rows(database_url, "SELECT number, status FROM invoice")
    assert stored
    assert all(row == (None, "draft") for row in stored)
    finalized = run_billing("finalize", "--period", RUNNING, env=env, cwd=tmp_path)
    assert_one_line(finalized, f"{RUNNING} has not ended")
    assert rows(database_url, "SELECT number, status FROM invoice") == stored
