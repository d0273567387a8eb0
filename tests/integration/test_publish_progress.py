"""Long in-process work shows progress: a close and a re-render report every batch of
statements they render, one line each, and the counts read right."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from billing.close import publish
from billing.close.inline import close_period
from billing.close.publish import render_statements
from billing.config import Settings
from billing.periods import BillingPeriod
from billing.usage.emulator import running_emulator

PERIOD = BillingPeriod.parse("2026-10")


def test_rendering_reports_progress_in_batches(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "PROGRESS_EVERY", 2)
    lines: list[str] = []
    with running_emulator(orgs=5, seed=2) as base_url:
        settings = make_settings(mka1_base_url=base_url)
        close_period(settings, PERIOD, progress=lines.append)
    batches = [line for line in lines if " so far " in line]
    assert [line.split(", ")[0] for line in batches] == [
        "2 statements so far (2 rendered",
        "4 statements so far (4 rendered",
    ]
    assert "wrote 5 statements (5 rendered, 0 unchanged), the summary and the reports to" in (
        "\n".join(lines)
    )

    lines.clear()
    render_statements(settings, PERIOD, progress=lines.append)
    assert lines[:-1] == [
        "2 statements so far (0 rendered, 2 unchanged)",
        "4 statements so far (0 rendered, 4 unchanged)",
    ]
    assert lines[-1].startswith("wrote 5 statements of 2026-10 (0 rendered, 5 unchanged) into ")

    lines.clear()
    render_statements(settings, PERIOD, progress=lines.append, force=True)
    assert lines[-1].startswith("wrote 5 statements of 2026-10 (5 rendered, 0 unchanged) into ")
