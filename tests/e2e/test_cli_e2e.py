"""End to end: `billing emulator` and `billing close` as real processes over a real socket."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing.periods import BillingPeriod
from tests.support.agreement import assert_period_agrees
from tests.support.processes import emulator_process, run_billing
from tests.support.reference import cards_need_session_kind, expected_totals, fetch_raw_results

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PERIOD = BillingPeriod.parse("2026-10")


@pytest.fixture
def emulator_url() -> Iterator[str]:
    with emulator_process("--orgs", "7", "--seed", "11", "--page-size", "120") as url:
        yield url


@pytest.mark.e2e
@pytest.mark.postgres
def test_cli_close_over_http_on_postgres(emulator_url: str, pg_url: str, tmp_path: Path) -> None:
    env = {
        "MKA1_BASE_URL": emulator_url,
        "MKA1_API_KEY": "e2e-key",
        "BILLING_DATABASE_URL": pg_url,
        "BILLING_OUTPUT_DIR": str(tmp_path / "out"),
        "BILLING_EMAIL_BACKEND": "file",
    }
    done = run_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Closed 2026-10: 7 invoices" in done.stdout
    totals = assert_period_agrees(pg_url, tmp_path / "out" / "2026-10", "2026-10")
    raw = fetch_raw_results(
        emulator_url,
        PERIOD.start_unix,
        PERIOD.end_unix,
        by_session_kind=cards_need_session_kind(EXAMPLES / "ratecards"),
    )
    assert totals == expected_totals(
        raw, EXAMPLES / "ratecards", EXAMPLES / "orgs.yaml", PERIOD.first_day
    )
    again = run_billing("close", "--period", str(PERIOD), env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert assert_period_agrees(pg_url, tmp_path / "out" / "2026-10", "2026-10") == totals
    offline = {**env, "MKA1_BASE_URL": "http://127.0.0.1:9"}  # nobody listens: snapshot only
    rerated = run_billing("rerate", "--period", str(PERIOD), env=offline, cwd=tmp_path)
    assert rerated.returncode == 0, rerated.stderr
    assert "from the snapshot of run" in rerated.stderr
    assert assert_period_agrees(pg_url, tmp_path / "out" / "2026-10", "2026-10") == totals


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["close", "--period", "2026-13"], {}, "period 2026-13 is out of range"),
        (
            ["close", "--period", "2026-10"],
            {"MKA1_BASE_URL": "http://127.0.0.1:9", "MKA1_MAX_ATTEMPTS": "1", "MKA1_API_KEY": "k"},
            "page 1",
        ),
        (
            ["close", "--period", "2026-10"],
            {"BILLING_RATE_CARDS": "/nonexistent"},
            "rate-card folder not found",
        ),
        (["close", "--period", "2026-10"], {"MKA1_BASE_URL": "ftp://x"}, "setting MKA1_BASE_URL"),
    ],
)
def test_expected_failures_are_one_line_and_exit_1(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    env = {
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}",
        "BILLING_OUTPUT_DIR": str(tmp_path),
        **env,
    }
    done = run_billing(*args, env=env, cwd=tmp_path)
    assert done.returncode == 1
    lines = [
        line
        for line in done.stderr.splitlines()
        if line.strip() and not line.startswith(("fetched", "WARNING"))
    ]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert message in lines[0]
    assert "Traceback" not in done.stderr
