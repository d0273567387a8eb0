"""The ledger under real processes on real PostgreSQL: concurrent closes and finalizers, and
closes killed with SIGKILL at several points, then run again."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.periods import BillingPeriod
from tests.support.agreement import assert_period_agrees, rows
from tests.support.processes import emulator_process, run_billing, start_billing, wait_for_line
from tests.support.reference import cards_need_session_kind, expected_totals, fetch_raw_results

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

OCTOBER = BillingPeriod.parse("2026-10")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUSY = "another close, finalize or re-rate of 2026-10 is running"


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[str]:
    """An emulator slow enough (small pages, 0.25 s a response) for closes to overlap."""
    with emulator_process(
        "--orgs", "5", "--seed", "5", "--page-size", "40", "--latency", "0.25"
    ) as url:
        yield url


@pytest.fixture(scope="module")
def expected(slow_upstream: str) -> dict[str, object]:
    raw = fetch_raw_results(
        slow_upstream,
        OCTOBER.start_unix,
        OCTOBER.end_unix,
        by_session_kind=cards_need_session_kind(EXAMPLES / "ratecards"),
    )
    return dict(
        expected_totals(raw, EXAMPLES / "ratecards", EXAMPLES / "orgs.yaml", OCTOBER.first_day)
    )


def environment(upstream: str, database_url: str, folder: Path) -> dict[str, str]:
    return {
        "MKA1_BASE_URL": upstream,
        "MKA1_API_KEY": "test-key",
        "BILLING_DATABASE_URL": database_url,
        "BILLING_OUTPUT_DIR": str(folder / "statements"),
        "BILLING_EMAIL_BACKEND": "file",
        "BILLING_BROKER_URL": "",
    }


def assert_one_clean_ledger(database_url: str, folder: Path, expected: dict[str, object]) -> None:
    """One live invoice per org, totals as computed by hand, no duplicate line, gapless numbers."""
    totals = assert_period_agrees(database_url, folder / "statements" / "2026-10", "2026-10")
    assert totals == expected
    live = rows(
        database_url,
        "SELECT org_id, count(*) FROM invoice WHERE status <> 'void' GROUP BY org_id",
    )
    assert sorted(live) == sorted((org, 1) for org in expected)
    duplicated = rows(
        database_url,
        "SELECT invoice_id, meter, api_key_id, user_id, count(*) FROM invoice_line "
        "GROUP BY invoice_id, meter, api_key_id, user_id, charge_class HAVING count(*) > 1",
    )
    assert duplicated == []
    year = datetime.now(UTC).year
    numbers = sorted(str(n) for (n,) in rows(database_url, "SELECT number FROM invoice"))
    assert numbers == [f"INV-{year}-{n:06d}" for n in range(1, len(expected) + 1)]


def test_two_closes_at_once_one_works_the_other_exits_with_a_message(
    slow_upstream: str, pg_url: str, tmp_path: Path, expected: dict[str, object]
) -> None:
    env = environment(slow_upstream, pg_url, tmp_path)
    first = start_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    wait_for_line(first, "fetched usage page 1")
    second = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    _first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 1
    assert BUSY in second.stderr
    assert "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert_one_clean_ledger(pg_url, tmp_path, expected)
    assert rows(pg_url, "SELECT status FROM billing_run") == [("succeeded",)]


def test_a_close_that_waits_runs_after_the_first_and_finds_it_finalized(
    slow_upstream: str, pg_url: str, tmp_path: Path, expected: dict[str, object]
) -> None:
    env = environment(slow_upstream, pg_url, tmp_path)
    first = start_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    wait_for_line(first, "fetched usage page 1")
    second = start_billing("close", "--period", "2026-10", "--wait", "300", env=env, cwd=tmp_path)
    _first_out, first_err = first.communicate(timeout=300)
    second_out, second_err = second.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second.returncode == 0, second_err
    assert second_out.count("already finalized") == len(expected)
    assert_one_clean_ledger(pg_url, tmp_path, expected)
    statuses = rows(pg_url, "SELECT status, finalized_count FROM billing_run ORDER BY id")
    assert statuses == [("succeeded", len(expected)), ("succeeded", 0)]


def test_concurrent_finalizers_number_without_gaps_or_duplicates(
    pg_url: str, tmp_path: Path
) -> None:
    months = ["2026-07", "2026-08", "2026-09", "2026-10"]  # months that have ended
    with emulator_process("--orgs", "6", "--seed", "2", "--page-size", "500") as upstream:
        env = environment(upstream, pg_url, tmp_path)
        for month in months:
            drafted = run_billing("close", "--period", month, "--draft", env=env, cwd=tmp_path)
            assert drafted.returncode == 0, drafted.stderr
    finalizers = [
        start_billing("finalize", "--period", month, env=env, cwd=tmp_path) for month in months
    ]
    for process in finalizers:
        _out, errors = process.communicate(timeout=300)
        assert process.returncode == 0, errors
    year = datetime.now(UTC).year
    numbers = [str(n) for (n,) in rows(pg_url, "SELECT number FROM invoice ORDER BY number")]
    assert numbers == [f"INV-{year}-{n:06d}" for n in range(1, 6 * len(months) + 1)]
    per_month = rows(
        pg_url,
        "SELECT period, count(*) FROM invoice WHERE status IN ('finalized', 'sent') "
        "GROUP BY period",
    )
    assert dict(per_month) == dict.fromkeys(months, 6)


KILL_POINTS = [
    "fetched usage page 2",  # fetching: the snapshot is half written
    "rated ",  # rated, drafts being stored
    "stored ",  # drafts stored, finalization next
    "finalized ",  # numbers given, statements and emails under way
]


@pytest.mark.parametrize("kill_after", KILL_POINTS)
def test_a_killed_close_runs_again_to_the_same_totals(
    kill_after: str,
    slow_upstream: str,
    pg_url: str,
    tmp_path: Path,
    expected: dict[str, object],
) -> None:
    env = environment(slow_upstream, pg_url, tmp_path)
    victim = start_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    wait_for_line(victim, kill_after)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert rows(pg_url, "SELECT status FROM billing_run") == [("running",)]

    again = run_billing("close", "--period", "2026-10", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "stopped before it finished; this run takes over" in again.stderr
    assert_one_clean_ledger(pg_url, tmp_path, expected)
    runs = rows(pg_url, "SELECT status FROM billing_run ORDER BY id")
    assert runs == [("interrupted",), ("succeeded",)]
    unsent = rows(
        pg_url,
        "SELECT org_id FROM invoice WHERE status <> 'sent' AND contact_emails <> ''",
    )
    assert unsent == []
    emails = sorted(p.name for p in (tmp_path / "statements" / "2026-10" / "emails").iterdir())
    sent = rows(pg_url, "SELECT number FROM invoice WHERE status = 'sent' ORDER BY number")
    assert emails == [f"{number}.eml" for (number,) in sent]
