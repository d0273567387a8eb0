"""Benchmark: rate 1,000,000 usage rows on one core and report rows per second.

Run with `make bench-rating` (or `.venv/bin/python -m bench.rating --rows N`). The rows are built
before the clock starts; the figure covers aggregation and rating of every org.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from decimal import Decimal
from pathlib import Path

from billing.catalog import load_org_directory, load_rate_cards
from billing.catalog.loader import card_for_account
from billing.domain import UsageRecord
from billing.periods import BillingPeriod
from billing.rating import UsageAggregate, rate_period

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RESULTS = Path(__file__).resolve().parent / "results"
TARGET_ROWS_PER_SECOND = 1_000_000  # issue 21 (issue 9 asked for 500,000)


def synthetic_rows(count: int, orgs: int, seed: int = 1) -> list[UsageRecord]:
    """Usage rows over `orgs` orgs with 4 keys x 3 users each; some rows lack memory figures."""
    chooser = random.Random(seed)
    rows = []
    for index in range(count):
        org = index % orgs
        reserved = chooser.choice((512, 1024, 2048, 4096, None))
        peak = Decimal(chooser.randrange(100_000, 4_000_000)) / 1000 if reserved is None else None
        rows.append(
            UsageRecord(
                bucket_start=0,
                bucket_end=86400,
                org_id=f"org-{org:05d}",
                api_key_id=f"key-{org}-{index % 4}",
                user_id=None if index % 7 == 0 else f"user-{org}-{index % 3}",
                duration_ms=chooser.randrange(1, 10_000_000),
                reserved_memory_mib=reserved,
                peak_memory_mib=peak,
                workspace_bytes_in=chooser.randrange(0, 2**32),
                workspace_bytes_out=chooser.randrange(0, 2**32),
                num_sessions=chooser.randrange(1, 20),
                request_count=chooser.randrange(0, 500),
                num_operations=chooser.randrange(0, 900),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    period = BillingPeriod.parse("2026-10")
    catalog = load_rate_cards(EXAMPLES / "ratecards")
    directory = load_org_directory(EXAMPLES / "orgs.yaml")
    rows = synthetic_rows(args.rows, args.orgs)
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        aggregate = UsageAggregate()
        aggregate.add_all(rows)
        aggregated = time.perf_counter()
        invoices = rate_period(
            aggregate,
            directory.account_for,
            lambda account: card_for_account(catalog, directory, account, period),
        )
        finished = time.perf_counter()
        timings.append((aggregated - started, finished - aggregated, finished - started))
    best = min(timings, key=lambda timing: timing[2])
    figures = {
        "rows": args.rows,
        "orgs": args.orgs,
        "invoices": len(invoices),
        "aggregate_seconds": round(best[0], 3),
        "rate_seconds": round(best[1], 3),
        "total_seconds": round(best[2], 3),
        "rows_per_second": round(args.rows / best[2]),
        "target_rows_per_second": TARGET_ROWS_PER_SECOND,
    }
    print(
        f"rating {args.rows:,} rows of {args.orgs:,} orgs: aggregate {best[0]:.2f}s + "
        f"rate {best[1]:.2f}s = {best[2]:.2f}s -> {figures['rows_per_second']:,} rows/s "
        f"({figures['rows_per_second'] / TARGET_ROWS_PER_SECOND:.2f}x the "
        f"{TARGET_ROWS_PER_SECOND:,} rows/s target; "
        f"best of {args.repeat})"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rating.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
