"""Benchmark: the project's statement PDF against headless Chromium printing the same HTML, in
the same run, for a small, a median (36-line) and a 200-line statement.

    make bench-render
    .venv/bin/python -m bench.render_peer [--repeat N]

Each statement's HTML is `StatementRenderer.html` (the project's own page). WeasyPrint prints
it through `StatementRenderer.pdf`, both the optimised path the close uses and the plain path
(`optimised=False`), so the same run also gives the optimisation's before/after. The peer is
Debian's Chromium (/usr/bin/chromium, never a downloaded browser) through one persistent
Playwright page, as a Gotenberg-style service keeps it: `page.set_content(html)` then
`page.pdf(format=...)`. Chromium gets the same HTML and the same stylesheet, inlined as a
<style> element, and the logo inlined as a data: URL (an about:blank page may not load file:
URLs). Every statement prints the full line breakdown (BILLING_STATEMENT_DETAIL=lines), so the
200-line statement measures the engine on 200 table rows. The three printers take turns PDF
by PDF (the order rotating), so drift in the machine's speed falls on all of them; wall time,
medians. The close of 1,000 orgs is estimated with Chromium's per-statement time from
bench/results/close-1000.json. Figures go to bench/results/render_peer.json.
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.support import RESULTS, load_average, write_figures
from billing.statements.breakdown import BreakdownRule
from billing.statements.pdf import LOGO, SHIPPED_TEMPLATES, STYLESHEET, StatementRenderer
from tests.support.browser import CHROMIUM
from tests.support.browser import FLAGS as CHROMIUM_FLAGS
from tests.support.sample_statements import SIZES, sample_statement

ISSUER = ("en_US", "MKA1, Inc.", "548 Market Street\nSan Francisco, CA 94104\nUSA")
PAGE_SIZE = "A4"
CLOSE_ORGS = 1_000
# The issue's targets for WeasyPrint over Chromium on the same statement.
TARGETS = {"median": 2.5, "200 lines": 4.0}


def chromium_html(html: str) -> str:
    """The same page for Chromium: the shipped stylesheet inlined in <head> (WeasyPrint is
    handed it compiled, beside the HTML) and the logo's file: URL replaced by a data: URL."""
    assets = SHIPPED_TEMPLATES / "assets"
    css = (assets / STYLESHEET).read_text(encoding="utf-8")
    logo = base64.b64encode((assets / LOGO).read_bytes()).decode("ascii")
    html = html.replace((assets / LOGO).resolve().as_uri(), f"data:image/svg+xml;base64,{logo}")
    page_size = f"@page {{ size: {PAGE_SIZE}; }}"
    return html.replace("</head>", f"<style>{css}\n{page_size}</style>\n</head>", 1)


def timed(call: Callable[[], bytes]) -> tuple[float, float, int]:
    """Wall seconds, this process's CPU seconds and the PDF's size; the garbage of the previous
    PDF is collected first, outside the clock."""
    gc.collect()
    started, cpu_started = time.perf_counter(), time.process_time()
    size = len(call())
    return time.perf_counter() - started, time.process_time() - cpu_started, size


def measure(repeat: int) -> dict[str, Any]:
    """Median seconds per PDF of each printer on each size, taking turns PDF by PDF."""
    from playwright.sync_api import sync_playwright

    rule = BreakdownRule("lines")
    optimised = StatementRenderer(None, *ISSUER, page_size=PAGE_SIZE, breakdown=rule)
    plain = StatementRenderer(None, *ISSUER, page_size=PAGE_SIZE, breakdown=rule, optimised=False)
    statements = {size: sample_statement(lines) for size, lines in SIZES.items()}
    pages = {size: chromium_html(optimised.html(s)) for size, s in statements.items()}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            page = browser.new_page()

            def chromium(size: str) -> bytes:
                page.set_content(pages[size])
                return page.pdf(format=PAGE_SIZE, print_background=True)

            printers: dict[str, Callable[[str], bytes]] = {
                "weasyprint": lambda size: optimised.pdf(statements[size]),
                "weasyprint_plain": lambda size: plain.pdf(statements[size]),
                "chromium": chromium,
            }
            for size in SIZES:  # warm-up: fonts, caches, the browser's first layout
                for print_one in printers.values():
                    print_one(size)
            times: dict[tuple[str, str], list[float]] = {}
            cpu_times: dict[tuple[str, str], list[float]] = {}
            sizes: dict[tuple[str, str], int] = {}
            names = list(printers)
            for round_number in range(repeat):
                for size in SIZES:
                    shift = round_number % len(names)
                    for name in names[shift:] + names[:shift]:
                        seconds, cpu, length = timed(lambda: printers[name](size))  # noqa: B023
                        times.setdefault((name, size), []).append(seconds)
                        cpu_times.setdefault((name, size), []).append(cpu)
                        sizes[name, size] = length
            version = browser.version
        finally:
            browser.close()
    results = []
    for size, lines in SIZES.items():
        row: dict[str, Any] = {"size": size, "lines": lines}
        for name in names:
            row[f"{name}_ms"] = round(statistics.median(times[name, size]) * 1000, 1)
            row[f"{name}_kib"] = round(sizes[name, size] / 1024, 1)
        for name in ("weasyprint", "weasyprint_plain"):  # Chromium's CPU is in its own processes
            row[f"{name}_cpu_ms"] = round(statistics.median(cpu_times[name, size]) * 1000, 1)
        row["ratio_to_chromium"] = round(row["weasyprint_ms"] / row["chromium_ms"], 2)
        row["plain_ratio_to_chromium"] = round(row["weasyprint_plain_ms"] / row["chromium_ms"], 2)
        row["optimised_vs_plain"] = round(row["weasyprint_ms"] / row["weasyprint_plain_ms"], 3)
        row["optimised_vs_plain_cpu"] = round(
            row["weasyprint_cpu_ms"] / row["weasyprint_plain_cpu_ms"], 3
        )
        row["target"] = TARGETS.get(size)
        results.append(row)
    return {"chromium_version": version, "sizes": results}


def close_estimate(median: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    """The close of 1,000 orgs as bench/results/close-1000.json measured it, beside the same
    close with each PDF taking Chromium's median-statement time (and as many processes)."""
    path = folder / f"close-{CLOSE_ORGS}.json"
    if not path.is_file():
        return None
    import json

    close = json.loads(path.read_text(encoding="utf-8"))
    render = next(stage for stage in close["stages"] if stage["stage"] == "render PDFs")
    processes = close.get("processes", 1)
    chromium_render = close["invoices"] * median["chromium_ms"] / 1000 / processes
    optimised_render = render["seconds"] * median["optimised_vs_plain_cpu"]
    return {
        "orgs": close["orgs"],
        "measured_at": close["measured_at"],
        "processes": processes,
        "close_seconds": close["close_seconds"],
        "render_seconds": render["seconds"],
        "render_seconds_optimised_estimate": round(optimised_render, 1),
        "render_seconds_chromium_estimate": round(chromium_render, 1),
        "close_seconds_chromium_estimate": round(
            close["close_seconds"] - render["seconds"] + chromium_render, 1
        ),
        "close_seconds_optimised_estimate": round(
            close["close_seconds"] - render["seconds"] + optimised_render, 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15, help="PDFs per printer and size")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not CHROMIUM.is_file():
        sys.exit(
            f"no Chromium at {CHROMIUM}: run `make test-system-deps` (Debian's chromium; this "
            "benchmark never downloads a browser)"
        )
    load_start = load_average()
    started = time.perf_counter()
    figures = measure(args.repeat)
    by_size = {row["size"]: row for row in figures["sizes"]}
    import weasyprint

    figures = {
        "benchmark": "render_peer",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "repeat": args.repeat,
        "page_size": PAGE_SIZE,
        "load_average": {"start": load_start, "end": load_average()},
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "weasyprint": weasyprint.__version__,
            "chromium": figures["chromium_version"],
        },
        "sizes": figures["sizes"],
        "close": close_estimate(by_size["median"], args.results_dir),
    }
    for row in figures["sizes"]:
        print(
            f"{row['size']:>9} ({row['lines']:>3} lines): WeasyPrint {row['weasyprint_ms']} ms "
            f"(plain path {row['weasyprint_plain_ms']} ms, {row['optimised_vs_plain']}×), "
            f"Chromium {row['chromium_ms']} ms: {row['ratio_to_chromium']}×"
        )
    write_figures(args.results_dir, "render_peer.json", figures)


if __name__ == "__main__":
    main()
