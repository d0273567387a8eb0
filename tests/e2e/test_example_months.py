"""The shipped examples close every month the README invites, and `ratecards check` names them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.processes import run_billing

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_env(tmp_path: Path) -> dict[str, str]:
    return {
        "BILLING_DATABASE_URL": f"sqlite:///{tmp_path / 'billing.db'}",
        "BILLING_OUTPUT_DIR": str(tmp_path / "statements"),
        "BILLING_RATE_CARDS": str(EXAMPLES / "ratecards"),
        "BILLING_ORGS": str(EXAMPLES / "orgs.yaml"),
        "BILLING_EMAIL_BACKEND": "none",
    }


@pytest.mark.parametrize("period", ["2026-01", "2026-09", "2026-10"])
def test_the_demo_closes_every_month_the_examples_cover(tmp_path: Path, period: str) -> None:
    done = run_billing(
        "demo", "--orgs", "4", "--period", period, env=example_env(tmp_path), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert f"Closed {period}: 4 invoices" in done.stdout
    assert "Traceback" not in done.stderr
    written = tmp_path / "statements" / period
    assert sorted(path.name for path in written.glob("org-*.csv")) == [
        f"org-000{number}.csv" for number in range(1, 5)
    ]
    assert "org-0003" in (written / "summary.csv").read_text(encoding="utf-8")  # platform card


def test_ratecards_check_names_the_months_each_card_and_every_org_can_be_billed(
    tmp_path: Path,
) -> None:
    done = run_billing(
        "ratecards",
        "check",
        str(EXAMPLES / "ratecards"),
        "--orgs",
        str(EXAMPLES / "orgs.yaml"),
        env=example_env(tmp_path),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "ok: 4 rate-card versions of 3 cards"
    assert "platform bills 2026-01 on: 1 org (org-0003)" in lines
    assert "enterprise-eur bills 2026-01 on: 1 org (org-0001)" in lines
    assert any(
        line.startswith("standard bills 2026-01 on: the default card:")
        and line.endswith("every org not listed")
        for line in lines
    ), lines
    assert lines[-1] == "every org can be billed for 2026-01 on"
