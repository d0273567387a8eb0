"""`billing void` as a user types it: an invoice number only; a database id is refused in one
line, exit 1, with nothing voided."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.agreement import rows
from tests.support.processes import emulator_process, run_billing

pytestmark = [pytest.mark.e2e]


def test_void_refuses_a_database_id_in_one_line_and_voids_nothing(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'billing.db'}"
    with emulator_process("--orgs", "2", "--seed", "3") as upstream:
        env = {
            "MKA1_BASE_URL": upstream,
            "MKA1_API_KEY": "test-key",
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
            "BILLING_EMAIL_BACKEND": "file",
            "BILLING_BROKER_URL": "",
        }
        closed = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
        assert closed.returncode == 0, closed.stderr
    before = rows(database_url, "SELECT id, number, status FROM invoice ORDER BY id")

    by_id = run_billing("void", "1", "--reason", "by id", env=env, cwd=tmp_path)

    assert by_id.returncode == 1
    assert "Traceback" not in by_id.stderr
    assert by_id.stderr.strip().splitlines() == [
        "error: '1' is not an invoice number: billing void takes a number such as "
        "INV-2026-000123, never an id (billing invoices list shows the numbers)"
    ]
    assert rows(database_url, "SELECT id, number, status FROM invoice ORDER BY id") == before
    assert all(status != "void" for _, _, status in before)
