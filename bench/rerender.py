"""Benchmark: rendering an unchanged period again, against rendering it in full, in one run.

    make bench-rerender [BENCH_RERENDER_ORGS=N]
    .venv/bin/python -m bench.rerender [--orgs N] [--repeat R]

A period of N orgs is closed against `billing emulator` (its own process) into a throwaway
PostgreSQL database. Then, alternated R times, `billing statements render --period P --force`
(every PDF printed: the first render's cost) and `billing statements render --period P` (the
PDFs' keys match: nothing is printed), each as its own CLI process, wall time, and the same two
through `render_statements` in this process. Last, the period is closed again with nothing new
(fetch, rate, every invoice already finalized, publish reusing every PDF) beside the first
close. Medians; figures go to bench/results/rerender-N.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

from pydantic import SecretStr

from bench.support import (
    RESULTS,
    emulator_process,
    load_average,
    machine,
    throwaway_database,
    write_figures,
)
from billing.close.inline import close_period
from billing.close.publish import render_statements
from billing.config import Settings
from billing.periods import BillingPeriod

PERIOD = BillingPeriod.parse("2026-10")
BIN = Path(sys.executable).parent
T = TypeVar("T")


def clock() -> datetime:
    return datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def timed(call: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def cli_render(env: dict[str, str], force: bool) -> tuple[float, str]:
    """`billing statements render` as its own process: wall seconds and its last line."""
    command = [str(BIN / "billing"), "statements", "render", "--period", str(PERIOD)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--force"] if force else command,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    return time.perf_counter() - started, done.stdout.strip().splitlines()[-1]


def run(orgs: int, repeat: int) -> dict[str, Any]:
    loads = {"start": load_average()}
    with (
        emulator_process(orgs, seed=11, page_size=1000) as base_url,
        throwaway_database("billing_rerender") as database_url,
        TemporaryDirectory(prefix="rerender-") as work,
    ):
        settings = Settings(
            _env_file=None,
            database_url=database_url,
            mka1_base_url=base_url,
            mka1_api_key=SecretStr("bench"),
            output_dir=Path(work) / "statements",
            email_backend="none",
            broker_url=None,
        )
        env = {
            **os.environ,
            "BILLING_DATABASE_URL": database_url,
            "BILLING_OUTPUT_DIR": str(settings.output_dir),
            "BILLING_EMAIL_BACKEND": "none",
            "BILLING_AUTO_MIGRATE": "false",
            "MKA1_BASE_URL": base_url,
        }
        first_close, closed = timed(lambda: close_period(settings, PERIOD, now=clock))
        statements = len(closed.invoices)
        cli: dict[str, list[float]] = {"full": [], "unchanged": []}
        here: dict[str, list[float]] = {"full": [], "unchanged": []}
        said = []
        for _ in range(repeat):
            for name, force in (("full", True), ("unchanged", False)):
                seconds, line = cli_render(env, force)
                cli[name].append(seconds)
                said.append(line)
                seconds, result = timed(partial(render_statements, settings, PERIOD, force=force))
                here[name].append(seconds)
                expected = (statements, 0) if force else (0, statements)
                assert (result.rendered, result.reused) == expected, (name, result)
        loads["renders"] = load_average()
        reclose, again = timed(lambda: close_period(settings, PERIOD, now=clock))
        assert again.pdfs_rendered == 0, again
        loads["end"] = load_average()

    def ratio(times: dict[str, list[float]]) -> float:
        return round(statistics.median(times["unchanged"]) / statistics.median(times["full"]), 4)

    return {
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_average": loads,
        "orgs": orgs,
        "statements": statements,
        "repeat": repeat,
        "cli_seconds": {name: [round(t, 3) for t in times] for name, times in cli.items()},
        "in_process_seconds": {name: [round(t, 3) for t in ts] for name, ts in here.items()},
        "cli_median": {name: round(statistics.median(ts), 3) for name, ts in cli.items()},
        "in_process_median": {name: round(statistics.median(ts), 3) for name, ts in here.items()},
        "unchanged_vs_full_cli": ratio(cli),
        "unchanged_vs_full_in_process": ratio(here),
        "first_close_seconds": round(first_close, 3),
        "reclose_nothing_new_seconds": round(reclose, 3),
        "reclose_vs_first_close": round(reclose / first_close, 4),
        "cli_lines": said[:2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=int(os.environ.get("BENCH_RERENDER_ORGS", 100)))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures = run(args.orgs, args.repeat)
    for key in (
        "cli_median",
        "in_process_median",
        "unchanged_vs_full_cli",
        "unchanged_vs_full_in_process",
        "first_close_seconds",
        "reclose_nothing_new_seconds",
        "reclose_vs_first_close",
        "load_average",
    ):
        print(f"{key}: {figures[key]}")
    write_figures(RESULTS, f"rerender-{args.orgs}.json", figures)


if __name__ == "__main__":
    main()
