"""The close benchmark runs end to end in a tiny configuration and writes complete figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
STAGES = {
    "fetch",
    "snapshot store",
    "completeness check",
    "rate",
    "store invoices",
    "finalize",
    "load statements",
    "render PDFs",
    "write CSVs",
    "email",
    "summary and reports",
}
WITH_FLOORS = {"fetch", "snapshot store", "completeness check", "store invoices", "render PDFs"}


@pytest.mark.postgres
@pytest.mark.e2e
def test_bench_close_of_five_orgs_writes_every_stage_with_its_floor(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.close", "--orgs", "5", "--processes", "1"]
    finished = subprocess.run(
        [*command, "--sample", "2", "--results-dir", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=280,
    )

    assert finished.returncode == 0, finished.stderr[-3000:]
    figures = json.loads((tmp_path / "close-5.json").read_text(encoding="utf-8"))
    stages = {stage["stage"]: stage for stage in figures["stages"]}
    assert set(stages) == STAGES
    for name, stage in stages.items():
        assert stage["seconds"] >= 0, name
        assert stage["peak_rss_mib"] > 0, name
    for name in WITH_FLOORS:
        assert isinstance(stages[name]["ratio_to_floor"], int | float), name
        assert stages[name]["ratio_to_floor"] > 0, name
    assert stages["render PDFs"]["count"] == figures["invoices"] == 5
    assert stages["email"]["count"] == 4  # org-0005 of the example directory has no contact
    assert figures["render"]["speedup_2_vs_1"] > 0
    assert {"render_vs_bare_weasyprint", "render_2_vs_1_process", "store_vs_copy"} <= set(
        figures["targets"]
    )
    assert "render PDFs" in finished.stdout
    assert "ratio" in finished.stdout
