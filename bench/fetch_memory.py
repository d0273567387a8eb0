"""Benchmark: peak memory of a whole close over 10 usage pages against one over 100 pages.

Each close runs as its own `billing close` process against the emulator (its own process too),
and its peak RSS comes from the kernel (os.wait4). Usage is streamed page by page into exact
totals and the snapshot, so more pages must not mean much more memory.

    make bench-memory      or      .venv/bin/python -m bench.fetch_memory [--orgs N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import tempfile
import time

from bench.support import BIN, RESULTS, start_emulator
from billing.periods import BillingPeriod
from billing.usage.emulator import SyntheticUsage

PERIOD = BillingPeriod.parse("2026-10")
GROUP_BY = ("org_id", "api_key_id", "user_id", "session_kind")


def count_results(orgs: int, seed: int, width: str) -> int:
    buckets = SyntheticUsage(orgs, seed).results(
        PERIOD.start_unix, PERIOD.end_unix, width, GROUP_BY, None
    )
    return sum(len(bucket["results"]) for bucket in buckets)


def measure_close(orgs: int, seed: int, width: str, pages: int) -> dict[str, object]:
    """Peak RSS (MiB) and time of one `billing close` whose fetch takes about `pages` pages."""
    results = count_results(orgs, seed, width)
    page_size = math.ceil(results / pages)
    emulator, url = start_emulator(orgs, seed, page_size)
    try:
        with tempfile.TemporaryDirectory() as folder:
            env = {
                **os.environ,
                "MKA1_BASE_URL": url,
                "MKA1_API_KEY": "bench",
                "MKA1_BUCKET_WIDTH": width,
                "MKA1_TIMEOUT_SECONDS": "300",
                "BILLING_DATABASE_URL": f"sqlite:///{folder}/bench.db",
                "BILLING_OUTPUT_DIR": f"{folder}/out",
                "BILLING_EMAIL_BACKEND": "none",
            }
            started = time.perf_counter()
            close = subprocess.Popen(
                [str(BIN / "billing"), "close", "--period", str(PERIOD)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            _pid, status, usage = os.wait4(close.pid, 0)
            seconds = time.perf_counter() - started
            if status != 0:
                raise RuntimeError(
                    f"the close failed: {close.stderr.read() if close.stderr else ''!r}"
                )
    finally:
        emulator.terminate()
        emulator.wait()
    return {
        "bucket_width": width,
        "pages": pages,
        "results": results,
        "page_size": page_size,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orgs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cases = [
        measure_close(args.orgs, args.seed, "1d", 10),
        measure_close(args.orgs, args.seed, "1d", 100),
        measure_close(args.orgs, args.seed, "1h", 100),
    ]
    print(f"{'case':<34}{'results':>9}{'pages':>7}{'peak RSS':>11}{'time':>9}")
    for case in cases:
        label = f"{case['bucket_width']} buckets, {case['pages']} pages"
        print(
            f"{label:<34}{case['results']:>9,}{case['pages']:>7}"
            f"{case['peak_rss_mib']:>8} MiB{case['seconds']:>8}s"
        )
    base = float(str(cases[0]["peak_rss_mib"]))
    for case in cases[1:]:
        delta = float(str(case["peak_rss_mib"])) - base
        print(f"  {case['bucket_width']}/{case['pages']} pages vs 1d/10 pages: {delta:+.1f} MiB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fetch_memory.json").write_text(json.dumps(cases, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
