"""The close benchmark runs end to end in a tiny configuration and writes complete figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
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


def run_bench(module: str, *options: str, results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *options, "--results-dir", str(results)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=280,
    )


WITH_FLOORS = {"fetch", "snapshot store", "completeness check", "store invoices", "render PDFs"}


@pytest.mark.postgres
@pytest.mark.e2e
def test_bench_close_of_five_orgs_writes_every_stage_with_its_floor(tmp_path: Path) -> None:
    finished = run_bench(
        "bench.close", "--orgs", "5", "--processes", "1", "--sample", "2", results=tmp_path
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


@pytest.mark.postgres
@pytest.mark.e2e
def test_bench_workers_closes_on_one_then_two_celery_worker_processes(tmp_path: Path) -> None:
    finished = run_bench("bench.workers", "--orgs", "4", results=tmp_path)

    assert finished.returncode == 0, finished.stderr[-3000:]
    figures = json.loads((tmp_path / "workers-4.json").read_text(encoding="utf-8"))
    assert [run["concurrency"] for run in figures["runs"]] == [1, 2]
    for run in figures["runs"]:
        assert run["invoices_rendered"] == 4
        assert run["emails"] == 4  # one email unit per invoice, each done
        assert run["seconds"] > 0
    assert figures["speedup_2_vs_1"] > 0
    assert figures["cpu_loop_2_vs_1"] > 0
    assert "2 worker processes:" in finished.stdout
