"""The terminal output of `billing` as a new user meets it, run as real processes: upstream ids
holding console markup and escape sequences printed literally, one message per event, counts
and ranges that read right, --format json|csv, --version, and a quick, readable --help."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from billing.usage.emulator import UsageEmulator, serve_emulator
from billing.usage.synthetic import SyntheticUsage
from tests.support.processes import BIN, run_billing

HOSTILE_IDS = ("[bold red]x[/]", "acme[/b]", "evil\x1b[2J", "org-0003")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class HostileUsage(SyntheticUsage):
    """Synthetic usage whose org ids are markup, a stray closing tag and an escape sequence."""

    def org_ids(self) -> list[str]:
        return list(HOSTILE_IDS)


@pytest.fixture(scope="module")
def hostile_upstream() -> Iterator[str]:
    server = serve_emulator(
        UsageEmulator(HostileUsage(len(HOSTILE_IDS), 1), page_size=200), "127.0.0.1", 0
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def environment(upstream: str, folder: Path) -> dict[str, str]:
    return {
        "MKA1_BASE_URL": upstream,
        "MKA1_API_KEY": "test-key",
        "BILLING_DATABASE_URL": f"sqlite:///{folder / 'billing.db'}",
        "BILLING_OUTPUT_DIR": str(folder / "statements"),
        "BILLING_EMAIL_BACKEND": "file",
        "BILLING_BROKER_URL": "",
        "BILLING_RATE_CARDS": str(EXAMPLES / "ratecards"),
        "BILLING_ORGS": str(EXAMPLES / "orgs.yaml"),
    }


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "\x1b" not in done.stdout
    assert "\x1b" not in done.stderr


def test_hostile_org_ids_print_literally_and_every_run_succeeds(
    hostile_upstream: str, tmp_path: Path
) -> None:
    env = environment(hostile_upstream, tmp_path)
    partial = run_billing(
        "close", "--period", "2026-10", "--org", "org-0003", env=env, cwd=tmp_path
    )
    assert_clean(partial)
    assert "finalized 1 invoice of 2026-10: INV-2026-000001\n" in partial.stderr
    assert "Closed 2026-10: 1 invoice " in partial.stdout

    first = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    assert_clean(first)
    assert "finalized 3 invoices of 2026-10: INV-2026-000002 to INV-2026-000004" in first.stderr
    for shown_id in ("[bold red]x[/]", "acme[/b]", "evil\\x1b[2J"):
        assert f"│ {shown_id}" in first.stdout
    for number in ("INV-2026-000002", "INV-2026-000003", "INV-2026-000004"):
        assert number in first.stdout  # never cut to "INV-2026-000…" in a pipe

    again = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    assert_clean(again)
    assert again.stdout.count("already finalized") == len(HOSTILE_IDS)
    assert "already finalized INV" not in again.stderr
    assert f"{len(HOSTILE_IDS)} already finalized" in again.stderr
    assert "acme[/b]: already finalized INV-2026-" in again.stdout
    assert "org-0003: already finalized INV-2026-000001" in again.stdout
    assert "evil\\x1b[2J: already finalized" in again.stdout

    listed = run_billing("invoices", "list", env=env, cwd=tmp_path)
    assert_clean(listed)
    assert "acme[/b]" in listed.stdout
    assert "[bold red]x[/]" in listed.stdout
    for sequence in range(1, 5):
        each = run_billing("invoices", "show", f"INV-2026-00000{sequence}", env=env, cwd=tmp_path)
        assert_clean(each)
    shown = run_billing("invoices", "show", "INV-2026-000003", env=env, cwd=tmp_path)
    assert "org acme[/b] (acme[/b]), period 2026-10" in shown.stdout


def test_listings_as_json_and_csv_carry_every_row_and_exact_amounts(
    hostile_upstream: str, tmp_path: Path
) -> None:
    env = environment(hostile_upstream, tmp_path)
    closed = run_billing("close", "--period", "2026-10", "--format", "json", env=env, cwd=tmp_path)
    assert_clean(closed)
    result = json.loads(closed.stdout)
    assert sorted(row["org"] for row in result["invoices"]) == sorted(HOSTILE_IDS)
    assert all(isinstance(row["total"], str) for row in result["invoices"])
    total = sum(Decimal(row["total"]) for row in result["invoices"])
    assert result["totals"] == {"USD": str(total)}

    as_csv = run_billing("invoices", "list", "--format", "csv", env=env, cwd=tmp_path)
    assert_clean(as_csv)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {row["org"] for row in rows} == {*HOSTILE_IDS[:2], "evil\\x1b[2J", "org-0003"}
    assert {row["total"] for row in rows} == {row["total"] for row in result["invoices"]}

    runs = json.loads(run_billing("runs", "list", "--format", "json", env=env, cwd=tmp_path).stdout)
    assert [run["status"] for run in runs] == ["succeeded"]
    run = json.loads(
        run_billing(
            "runs", "show", str(runs[0]["run"]), "--format", "json", env=env, cwd=tmp_path
        ).stdout
    )
    assert run["totals"] == {"USD": str(total)}
    deliveries = run_billing(
        "email", "status", "--period", "2026-10", "--format", "csv", env=env, cwd=tmp_path
    )
    assert deliveries.stdout.splitlines()[0] == "org,invoice,recipient,kind,state,tries,detail"
    card = run_billing(
        "ratecards",
        "show",
        "standard",
        "--period",
        "2026-10",
        "--format",
        "json",
        env=env,
        cwd=tmp_path,
    )
    assert json.loads(card.stdout)["prices"]


def test_version_and_a_help_that_imports_no_database_or_pdf_library(tmp_path: Path) -> None:
    version = run_billing("--version", env={}, cwd=tmp_path)
    assert version.returncode == 0
    assert version.stdout.startswith("billing ")
    helped = run_billing("close", "--help", env={"COLUMNS": "200"}, cwd=tmp_path)
    assert helped.returncode == 0
    assert "--period PERIOD" in " ".join(helped.stdout.split())
    assert "<list[str]>" not in helped.stdout
    assert "<str>" not in helped.stdout
    assert "table|json|csv" in helped.stdout
    probe = (
        "import sys\n"
        "from billing.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('weasyprint', 'sqlalchemy', 'billing.close', 'billing.db')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ},
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert "HEAVY []" in done.stdout
    assert (BIN / "billing").exists()


@pytest.mark.postgres
def test_json_and_csv_amounts_have_the_currencys_places_on_postgresql(
    hostile_upstream: str, tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL reads amounts back with 12 places: the listings still write 25.27, not
    25.270000000000, and quantities without trailing zeros."""
    env = {**environment(hostile_upstream, tmp_path), "BILLING_DATABASE_URL": pg_url}
    closed = run_billing("close", "--period", "2026-10", "--format", "json", env=env, cwd=tmp_path)
    assert_clean(closed)
    listed = json.loads(
        run_billing("invoices", "list", "--format", "json", env=env, cwd=tmp_path).stdout
    )
    assert listed
    for row in listed:
        assert len(row["total"].split(".")[1]) == 2, row["total"]
    shown = json.loads(
        run_billing(
            "invoices", "show", listed[0]["number"], "--format", "json", env=env, cwd=tmp_path
        ).stdout
    )
    assert len(shown["total"].split(".")[1]) == 2
    for charge in shown["charges"]:
        assert len(charge["amount"].split(".")[1]) == 2, charge["amount"]
        assert not charge["quantity"].endswith("0") or "." not in charge["quantity"], charge
