"""docs/PERFORMANCE.md from the figures in bench/results/: the close stage by stage beside its
floors, rendering, scaling, the other benchmarks, and which targets of issue 9 are met.

    .venv/bin/python -m bench.report [--orgs N]      (make bench-close and bench-scale run it)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.support import RESULTS

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"

# What limits a stage that misses its target, as the benchmark found it; shown only while the
# target is missed.
CAUSES = {
    "store_vs_copy": (
        "what is left is the daily-usage INSERT ... SELECT (the snapshot summed per org and "
        "day: a sort that spills to disk with PostgreSQL's default 4 MB of work memory) and "
        "the Decimal conversions of every amount and quantity in Python; see the changes below."
    ),
    "render_2_vs_1_process": (
        "two processes cannot do better than the machine gives a second process: compare with "
        "what a pure CPU loop gained from a second process at the same time (Rendering, "
        "above). Each PDF costs the same CPU in a worker as in the closing process since the "
        "print runs in its own frame-stack chunk (see the changes below)."
    ),
    "render_vs_bare_weasyprint": (
        "the project's renderer adds only the Jinja2 template and the chart (a few ms per "
        "PDF); a ratio above the target on a small sample is noise from other work."
    ),
    "peak_rss": (
        "most of the growth is the summary stage reaching its bound: `summary.pdf` lists up to "
        "`BILLING_REPORT_MAX_ORG_ROWS` (200) orgs per table, so at 100 orgs it lists 100 and "
        "from about 200 orgs on always 200 (166 MiB at 100 orgs, 195 MiB at 1,000, 211 MiB at "
        "5,000). The rest is the per-org growth of the other stages (next line)."
    ),
    "peak_rss_statements": (
        "what every close holds per org; from 1,000 to 5,000 orgs it grew 29 MiB (about 7 KiB "
        "per org): the org directory's YAML parse before the fetch (the fetch stage's +18 MiB: "
        "parsing 5,000 orgs peaks at about 26 MiB of Python objects, and about 1.2 KiB per org "
        "is kept), the drafts `finalize_drafts` loads as ORM objects (+11 MiB in the finalize "
        "stage), and a few hundred bytes per org of bookkeeping (the completeness check's "
        "per-org sums, the run's per-org outcomes, the invoice summaries). From 100 to 1,000 "
        "orgs the fetch's replay index also reaches its bound of 50,000 digests in memory "
        "(about 10 MiB). None of it is usage or statements, which are streamed."
    ),
    "time_5000_vs_1000": (
        "the stages whose time grows faster than the org count (the last column of the stage "
        "table under Scaling)."
    ),
}

# What the benchmark found when it was written (2026-11-25) and what was changed for it; the
# tables above are measured after the changes.
DIAGNOSIS = """## What was changed, and why

The first run of this benchmark (1,000 orgs, 2026-11-25) found these; each was profiled with
the project's code patched in a scratch script, then fixed in the project.

1. **Store invoices** was 66× its COPY floor (28 s, 2 s of it CPU) and grew 29.9× from 1,000
   to 5,000 orgs:
   - the daily-usage `INSERT ... SELECT` (billing/db/repository.py) ran as a nested loop that
     rescanned the run's whole snapshot once per invoice (no statistics yet for the rows just
     loaded): quadratic. Session time per day is now summed while rating, from each org's
     results in hand (`daily_duration`), and loaded with the lines;
   - the ORM bulk inserts split into thousands of small batches (a new batch each time the set
     of NULL columns changed). Invoices, charges and lines are now loaded with `COPY` on
     PostgreSQL (`billing/db/bulk.py`; ids drawn from the sequence first), batched Core
     inserts on SQLite;
   - the immutability triggers of migration 0004 looked up the parent invoice once per
     inserted charge and line. Migration 0007 makes the PostgreSQL guards statement-level over
     transition tables (one join per statement; they refuse the same changes), and indexes
     the columns that refer to invoices (deleting a draft scanned every line of every period);
   - `attach_corrections` ran for every draft (five statements each); it now runs only for the
     orgs with corrections waiting.
2. **Snapshot store** was 16.8× COPY: the same ORM bulk-insert split. Each page is now one
   `COPY`, and PostgreSQL commits every 25 pages instead of every page.
3. **Rendering, 2 processes against 1**, was 1.72×: a forked worker paid more CPU per PDF
   than the closing process (about 5,000 minor page faults per PDF against 800). The cause is
   CPython 3.11's frame stack (python/cpython#142183): frames live in 16 KiB chunks, a chunk is
   mapped when a call does not fit and unmapped when it returns, and WeasyPrint's layout
   recursion crossed a chunk boundary 457 times per PDF in the parent and 1,368 times in a
   worker (strace: `mmap`/`munmap` pairs from `_PyThreadState_BumpFramePointerSlow`), depending
   only on the caller's stack depth. `StatementRenderer.pdf` now prints inside one large chunk
   of its own (`in_own_stack_chunk`): one map per PDF, the same CPU in a worker as in the
   parent at any depth. `mallopt`, `forkserver`, `spawn` and `gc.freeze` before the fork did
   not help.
4. **Memory** grew with the org count: the rating totals held every org's usage, the
   duplicate index held a digest per usage result (about 130 bytes each), `load_statements`
   read the whole period's statements and kept them through render, CSV and email, and
   `summary.pdf` listed every org in one WeasyPrint document (1.5 GiB at 5,000 orgs). Now
   the fetch keeps counts and a few integers per org; the replay index spills to a temporary
   file (item 8); rating reads the snapshot back one org at a time and stores drafts a
   batch at a time; statements are read 100 at a time for the PDFs, CSVs, emails and reports;
   the reports are written by a streaming writer, and `summary.pdf`'s per-org tables are
   bounded by `BILLING_REPORT_MAX_ORG_ROWS` (every org stays in `summary.csv` and the new
   `changes.csv`).
5. **Rendering in the close**: the in-process close rendered serially; it now renders through
   `render_pdfs` with `BILLING_RENDER_PROCESSES` processes (one per CPU by default), and a
   Celery render task reuses one renderer per worker process (`shared_renderer`) instead of
   building one per invoice (about 20% per PDF).
6. **Before the stages**: loading an org directory of 5,000 orgs took 12.3 s and raised peak
   RSS by 100 MiB (PyYAML's pure-Python loader, and the node tree composed a second time for
   line numbers). It is parsed with libyaml now and the line numbers are composed only when a
   message needs one: 1.3 s and +37 MiB.
7. **Finalize** ran one `UPDATE invoice_correction` per draft; it now runs one only for orgs
   with corrections waiting (1,000 drafts: 1.02 s to 0.09 s).
8. **Memory still grew** after item 4: 166 MiB at 100 orgs, 195 MiB at 1,000, 211 MiB at
   5,000. The resident size was read at every stage boundary (a scratch script, rendering
   faked), which found:
   - the overrides check formatted each org's `file:line` before knowing whether there was an
     error, and finding a line composes the whole directory's node tree: +29 MiB at 5,000
     orgs, on every close. The location is now worked out only for an error;
   - the directory's parse held the whole file as Python objects (a 26 MiB peak at 5,000
     orgs, most of it kept by the heap afterwards). The `orgs:` list is now read and
     validated one entry at a time as libyaml parses it (peak 4.4 MiB, 4% slower);
   - `finalize_drafts` loaded every draft as an ORM object (+11 MiB at 5,000). It now numbers,
     freezes and queues the drafts 500 plain rows at a time;
   - the replay index kept 50,000 digests in memory before spilling (about 6 MiB, and a
     sorted copy while spilling); it kept 10,000 in a SQLite file after that, and since issue
     21 packs each key and values digest into 24 bytes in memory (about 7 MiB at its bound of
     262,144) and appends them to a temporary file beyond, with a 1 MiB filter;
   - WeasyPrint holds about 0.2 MiB per org that `summary.pdf` lists while it lays the
     document out (at 300 orgs: +7 MiB for 25 rows per table, +13 MiB for 50, +48 MiB for
     200). The default `BILLING_REPORT_MAX_ORG_ROWS` is 50 now, so the summary costs about
     what one long statement does, whatever the number of orgs;
   - the benchmark's own set-up wrote the synthetic directory through one big Python
     structure in the measured process; it now writes it entry by entry.
"""


def load(folder: Path, name: str) -> Any:
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def seconds(value: float) -> str:
    return f"{value:,.2f} s" if value < 100 else f"{value:,.0f} s"


def close_section(figures: dict[str, Any]) -> list[str]:
    orgs = figures["orgs"]
    lines = [
        f"## The close of {orgs:,} orgs, stage by stage",
        "",
        f"{figures['usage_results']:,} usage results in {figures['pages']} pages, "
        f"{figures['invoices']:,} invoices, {figures['charges'] + figures['lines']:,} stored "
        f"line items (charges and lines; the largest statement has "
        f"{figures['largest_statement_lines']:,} lines), rendered with "
        f"{figures['processes']} processes. Each stage's peak RSS is its own (the kernel's "
        "high-water mark is reset between stages); CPU is this process's plus its ended "
        "children's (the rendering workers).",
        "",
        "| stage | time | CPU | throughput | peak RSS | floor, same run | floor time | ratio |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for stage in figures["stages"]:
        rate = f"{stage['per_second']:,.0f} {stage['unit']}/s" if stage["per_second"] else ""
        floor_time = "" if stage["floor_seconds"] is None else seconds(stage["floor_seconds"])
        ratio = "" if stage["ratio_to_floor"] is None else f"**{stage['ratio_to_floor']:.2f}×**"
        lines.append(
            f"| {stage['stage']} | {seconds(stage['seconds'])} | {seconds(stage['cpu_seconds'])} "
            f"| {rate} | {stage['peak_rss_mib']:.0f} MiB | {stage['floor'] or ''} "
            f"| {floor_time} | {ratio} |"
        )
    lines += [
        f"| **close (sum of the stages)** | **{seconds(figures['close_seconds'])}** | | "
        f"| {figures['peak_rss_mib']:.0f} MiB | | | |",
        "",
        f"The rendering workers peaked at {figures['render_workers_peak_rss_mib']:.0f} MiB RSS "
        f"each. The emulator's own data generation ({figures['emulator_generation_seconds']:.1f}"
        " s, on the first request of each query) is not counted. Fetch is the time spent in "
        "`UsageClient.iter_pages` (HTTP, JSON, validation, duplicate check); snapshot store is "
        "the rest of `fetch_and_snapshot` (the page COPYs, commits and per-org sums). Rate is "
        "the time spent reading the snapshot back org by org and pricing it; store invoices is "
        "the rest of that transaction. Each later stage streams the statements from the "
        "database again, 100 at a time.",
        "",
    ]
    notes = [
        f"- {stage['stage']}: {'; '.join(stage['notes'])}"
        for stage in figures["stages"]
        if stage["notes"]
    ]
    if "end_to_end_close" in figures:
        notes.append(
            f"- `billing.close.inline.close_period` in one call, as the service runs it (render, "
            f"CSV, email and reports in one streamed pass): "
            f"{seconds(figures['end_to_end_close']['seconds'])}"
        )
    return lines + notes + [""]


def render_section(figures: dict[str, Any]) -> list[str]:
    render = figures.get("render")
    if not render:
        return []
    lines = [
        "## Rendering",
        "",
        f"On an evenly spread sample of {render['sample']} of the statements (mean "
        f"{render['sample_mean_lines']} lines, against {render['mean_lines']} over all), "
        "rendered alternately in one process:",
        "",
        f"- the project's render path (`render_pdfs` in one process: template, chart, "
        f"WeasyPrint): {seconds(render['project_seconds'])}; bare WeasyPrint on the same HTML "
        "(one FontConfiguration, the same compiled stylesheets and options, printed between "
        "two of the project's PDFs, so with the same garbage-collector conditions): "
        f"{seconds(render['bare_seconds'])}; ratio **{render['ratio_to_bare']:.3f}×** "
        "(target ≤ 1.15×);",
        f"- `billing.statements.parallel.render_pdfs` over the same sample: 1 process "
        f"{seconds(render['processes_1_seconds'])} ({seconds(render['processes_1_cpu_seconds'])}"
        f" CPU), 2 processes {seconds(render['processes_2_seconds'])} "
        f"({seconds(render['processes_2_cpu_seconds'])} CPU; pool start included, best of two "
        f"each): **{render['speedup_2_vs_1']:.2f}×** the throughput (target ≥ 1.8×). At the "
        f"same time a pure CPU loop got {render.get('machine_2_vs_1_process', '?')}× from a "
        "second process; the one-minute load average just before was "
        f"{render['load_average_before_speedup']}.",
        "",
        f"WeasyPrint options and CSS, one change at a time, bare WeasyPrint on "
        f"{render['option_study_sample']} of the sample's HTML:",
        "",
        "| variant | per PDF | time | size per PDF |",
        "|---|---:|---:|---:|",
    ]
    for option in render["options"]:
        lines.append(
            f"| {option['variant']} | {option['seconds_per_pdf'] * 1000:.0f} ms "
            f"| {option['relative_time']:.2f}× | {option['kib_per_pdf']:,.0f} KiB |"
        )
    lines += [
        "",
        "Font subsetting stays on (embedding whole fonts is slower and makes each PDF about a "
        "megabyte); compression stays on; `table-layout: fixed` (already in "
        "templates/assets/statement.css for every table) is what keeps tables cheap. The "
        "image cache shared across a renderer's documents saves the logo's decoding per PDF. "
        "`render_pdfs` keeps the garbage collector off the objects that exist when it starts "
        "(`gc.freeze`, in each worker and around in-process rendering): a process that holds a "
        "period's statements otherwise spends about 15% of each PDF walking them.",
        "",
    ]
    return lines


def scaling_section(scaling: dict[str, Any] | None) -> list[str]:
    if not scaling:
        return [
            "## Scaling",
            "",
            "Not measured yet: run `make bench-scale`.",
            "",
        ]
    lines = [
        "## Scaling: 100, 1,000 and 5,000 orgs",
        "",
        f"Each size in its own process, without floors, rendering with "
        f"{scaling['processes']} processes.",
        "",
        "| orgs | usage results | line items | largest statement | close | per org | peak RSS "
        "| workers' peak RSS | measured (load average) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in scaling["sizes"]:
        lines.append(
            f"| {size['orgs']:,} | {size['usage_results']:,} | {size['line_items']:,} "
            f"| {size['largest_statement_lines']:,} lines | {seconds(size['close_seconds'])} "
            f"| {size['seconds_per_org'] * 1000:.1f} ms | {size['peak_rss_mib']:.0f} MiB "
            f"| {size['render_workers_peak_rss_mib']:.0f} MiB "
            f"| {size.get('measured_at', '')} ({size['load_average'].get('start', '')}) |"
        )
    names = list(scaling["sizes"][0]["stage_seconds"])
    first, last = scaling["sizes"][-2:] if len(scaling["sizes"]) > 1 else scaling["sizes"] * 2
    growth = f"{last['orgs']:,} / {first['orgs']:,} orgs"
    lines += [
        "",
        f"Stage times and peak RSS per size; the last column is the time's growth ({growth}: "
        f"{last['orgs'] / first['orgs']:g}× the orgs):",
        "",
        "| stage | "
        + " | ".join(f"{size['orgs']:,} orgs" for size in scaling["sizes"])
        + f" | {growth} |",
        "|---|" + "---:|" * (len(scaling["sizes"]) + 1),
    ]
    for name in names:
        cells = [
            f"{size['stage_seconds'][name]:,.2f} s / {size['stage_peak_rss_mib'][name]:.0f} MiB"
            for size in scaling["sizes"]
        ]
        before = first["stage_seconds"][name]
        ratio = f"{last['stage_seconds'][name] / before:.1f}×" if before else ""
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    lines.append("")
    for step in scaling["verdicts"]["steps"]:
        lines.append(
            f"- {step['from_orgs']:,} → {step['to_orgs']:,} orgs ({step['orgs_ratio']}×): "
            f"time {step['time_ratio']}×, peak RSS {step['peak_rss_growth_mib']:+.0f} MiB"
        )
    return [*lines, ""]


def targets_section(close: dict[str, Any] | None, scaling: dict[str, Any] | None) -> list[str]:
    rows: list[tuple[str, str, str, bool | None, str]] = []
    targets = (close or {}).get("targets", {})
    labels = {
        "render_vs_bare_weasyprint": "render per PDF vs bare WeasyPrint",
        "store_vs_copy": "store invoices vs COPY",
        "render_2_vs_1_process": "render throughput, 2 processes vs 1",
    }
    for key, label in labels.items():
        if key in targets:
            verdict = targets[key]
            rows.append((key, label, f"{verdict['value']}×", verdict["met"], verdict["target"]))
    verdicts = (scaling or {}).get("verdicts", {})
    labels["time_5000_vs_1000"] = "close time, 5,000 orgs vs 1,000"
    if "time_5000_vs_1000" in verdicts:
        verdict = verdicts["time_5000_vs_1000"]
        rows.append(
            (
                "time_5000_vs_1000",
                "close time, 5,000 orgs vs 1,000",
                f"{verdict['value']}×",
                verdict["met"],
                verdict["target"],
            )
        )
    for key, label in (
        ("peak_rss", "peak RSS of the close"),
        ("peak_rss_statements", "peak RSS without the period report"),
    ):
        if key in verdicts:
            growth = verdicts[key]
            labels[key] = label
            rows.append(
                (
                    key,
                    f"{label}, {growth['from_orgs']:,} → {growth['to_orgs']:,} orgs",
                    f"{growth['growth_mib']:+.0f} MiB ({growth['growth_kib_per_org']} KiB per org)",
                    growth.get("met"),
                    f"flat ({growth.get('target', '')})",
                )
            )
    lines = ["## Targets (issue 9)", "", "| target | measured | goal | met |", "|---|---:|---|---|"]
    for _key, label, value, met, goal in rows:
        shown = "judge from the figures" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {label} | {value} | {goal} | {shown} |")
    missed = [key for key, _label, _value, met, _goal in rows if met is False and key in CAUSES]
    if missed:
        lines += ["", "What holds back the targets not met:", ""]
        lines += [f"- {labels.get(key, key)}: {CAUSES[key]}" for key in missed]
    return [*lines, ""]


def other_benchmarks(folder: Path) -> list[str]:
    lines = ["## The other benchmarks", ""]
    rating = load(folder, "rating.json")
    if rating:
        lines.append(
            f"- `make bench-rating`: {rating['rows']:,} usage rows of {rating['orgs']:,} orgs "
            f"rated in {rating['total_seconds']} s, {rating['rows_per_second']:,} rows/s "
            f"(target {rating['target_rows_per_second']:,})."
        )
    fetch = load(folder, "fetch_memory.json")
    if fetch:
        cases = ", ".join(
            f"{case['bucket_width']}/{case['pages']} pages {case['peak_rss_mib']} MiB"
            for case in fetch
        )
        lines.append(f"- `make bench-memory`: peak RSS of a whole `billing close`: {cases}.")
    return [*lines, ""]


def render_peer_section(folder: Path) -> list[str]:
    """bench/render_peer.py: the same statements printed by the project and by Chromium."""
    peer = load(folder, "render_peer.json")
    if not peer:
        return []
    info = peer["machine"]
    loads = ", ".join(f"{when} {value}" for when, value in peer["load_average"].items())
    lines = [
        "## Rendering against a Chromium peer",
        "",
        "`make bench-render`: the project's own statement HTML (`StatementRenderer.html`) for a "
        "small, the median (36 lines) and a 200-line statement, every line printed "
        f"(`BILLING_STATEMENT_DETAIL=lines`), {peer['repeat']} PDFs per printer and size, the "
        "printers taking turns PDF by PDF; medians of wall time. WeasyPrint "
        f"{info['weasyprint']} prints through `StatementRenderer.pdf` (the optimised path the "
        "close uses, and the plain path, `optimised=False`, for the before/after); Chromium "
        f"{info['chromium']} (Debian's, headless) through one persistent Playwright page "
        "(`set_content` then `pdf`), the same HTML with the same stylesheet inlined. Measured "
        f"{peer['measured_at']} on {info['cpus']} CPUs; one-minute load average: {loads} "
        "(on a loaded machine wall time grows beyond CPU time for both printers: compare the "
        "ratios, measured side by side, rather than the milliseconds).",
        "",
        "| statement | lines | WeasyPrint | plain path | optimised / plain (CPU) | Chromium "
        "| WeasyPrint / Chromium | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in peer["sizes"]:
        target = f"≤ {row['target']}×" if row.get("target") else "—"
        lines.append(
            f"| {row['size']} | {row['lines']} | {row['weasyprint_ms']:,.0f} ms "
            f"({row['weasyprint_cpu_ms']:,.0f} ms CPU) "
            f"| {row['weasyprint_plain_ms']:,.0f} ms | {row['optimised_vs_plain_cpu']:.3f}× "
            f"| {row['chromium_ms']:,.0f} ms | **{row['ratio_to_chromium']:.2f}×** | {target} |"
        )
    close = peer.get("close")
    if close:
        lines += [
            "",
            f"The close of {close['orgs']:,} orgs (`make bench-close`, measured "
            f"{close['measured_at']}, {close['processes']} render processes): "
            f"{seconds(close['close_seconds'])}, of which rendering "
            f"{seconds(close['render_seconds'])}. With the optimised path's CPU ratio at the "
            f"median size, rendering would take about "
            f"{seconds(close['render_seconds_optimised_estimate'])} (close "
            f"{seconds(close['close_seconds_optimised_estimate'])}); with Chromium's median "
            f"time per statement on as many processes, about "
            f"{seconds(close['render_seconds_chromium_estimate'])} (close "
            f"{seconds(close['close_seconds_chromium_estimate'])}).",
        ]
    lines += [
        "",
        "The optimised path prints the same pixels as the plain one (tests/unit/"
        "test_pdf_pixels.py rasterises every page of both): the chart is handed to WeasyPrint "
        "as an SVG image served from memory instead of markup its pure-Python HTML parser "
        "reads and serialises again, the whitespace-only text between block and table tags is "
        "left out (never inside text, `<pre>` or the SVG), and breakdown rows are striped by a "
        "class the template sets instead of `tr:nth-child(even)`.",
        "",
    ]
    return lines


def rerender_section(folder: Path) -> list[str]:
    """bench/rerender.py: a period rendered again with nothing changed, against in full."""
    found = sorted(folder.glob("rerender-*.json"))
    if not found:
        return []
    figures = json.loads(found[-1].read_text(encoding="utf-8"))
    loads = ", ".join(f"{when} {value}" for when, value in figures["load_average"].items())
    cli, here = figures["cli_median"], figures["in_process_median"]
    return [
        "## Rendering only what changed",
        "",
        f"`make bench-rerender`: a period of {figures['statements']:,} statements closed on "
        "PostgreSQL, then `billing statements render --period P --force` (every PDF printed) "
        "and `billing statements render --period P` (every key matches: no PDF printed, the "
        f"CSVs and reports written again) taking turns, {figures['repeat']} times each, as CLI "
        "processes and through `render_statements` in one process; medians. Measured "
        f"{figures['measured_at']}; one-minute load average: {loads}.",
        "",
        "| | every PDF printed | nothing changed | ratio | target |",
        "|---|---:|---:|---:|---:|",
        f"| `billing statements render` (process, wall) | {seconds(cli['full'])} "
        f"| {seconds(cli['unchanged'])} | **{figures['unchanged_vs_full_cli']:.1%}** | < 5% |",
        f"| `render_statements` (in process) | {seconds(here['full'])} "
        f"| {seconds(here['unchanged'])} | {figures['unchanged_vs_full_in_process']:.1%} | |",
        f"| close, then a re-close with nothing new | {seconds(figures['first_close_seconds'])} "
        f"| {seconds(figures['reclose_nothing_new_seconds'])} "
        f"| {figures['reclose_vs_first_close']:.1%} | |",
        "",
        "A PDF is reused when the key kept beside it (`<org>.pdf.key`: the statement's HTML, "
        "chart data, printing settings, asset files, statements code and WeasyPrint version) "
        "matches and its bytes are intact (billing/statements/render_keys.py). What is left of "
        "a re-render is reading the invoices, the HTML of each statement (to compute its key), "
        "the CSVs and the period's reports; the CLI figure includes the interpreter's start. "
        "Since 2026-12-01 a renderer imports WeasyPrint and compiles its stylesheet on its "
        "first print, so a process that prints nothing never loads the engine (about 1 s); "
        "the run before that (2026-11-30, another machine of this kind) measured 33.1% for "
        "the process and 39.7% for the re-close.",
        "",
    ]


def render_growth_section(folder: Path) -> list[str]:
    """bench/render_growth.py: a statement's render time now against the page before issue 19."""
    figures = load(folder, "render_growth.json")
    if figures is None:
        return []
    loads = ", ".join(f"{when} {value}" for when, value in figures["load_average"].items())
    lines = [
        "## The statement page against its version before taxes and the calmer layout",
        "",
        "`make bench-render-growth`: the same sample statements (default "
        "`BILLING_STATEMENT_DETAIL`) printed by this tree and by the tree at "
        f"`{figures['baseline']}` (unpacked by `git archive`), one printer process each, "
        f"taking turns PDF by PDF, {figures['repeat']} times each; CPU time per PDF, the median "
        "and the fastest of each. Measured "
        f"{figures['measured_at']}; one-minute load average: {loads}.",
        "",
        "| statement | before (median) | now (median) | ratio | fastest: before → now | "
        "ratio | limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in figures["sizes"]:
        lines.append(
            f"| {row['size']} ({row['lines']} lines) | {row['before_ms']:.0f} ms "
            f"| {row['now_ms']:.0f} ms | **{row['ratio']:.2f}×** "
            f"| {row['fastest_before_ms']:.0f} → {row['fastest_now_ms']:.0f} ms "
            f"| **{row['fastest_ratio']:.2f}×** | ≤ {row['limit']:.2f}× |"
        )
    return [*lines, ""]


def workers_section(folder: Path, close: dict[str, Any] | None) -> list[str]:
    """The close on Celery workers, 1 worker process against 2 (`make bench-workers`)."""
    found = [json.loads(path.read_text(encoding="utf-8")) for path in folder.glob("workers-*.json")]
    if not found:
        return []
    figures = max(found, key=lambda run: str(run["measured_at"]))  # the newest, whatever size
    runs = ", ".join(
        f"{run['concurrency']} process(es) {seconds(run['seconds'])}" for run in figures["runs"]
    )
    lines = [
        "## Adding Celery workers",
        "",
        f"`make bench-workers` closes {figures['orgs']:,} orgs on real Celery workers (Redis, "
        "PostgreSQL, the emulator, an SMTP sink), from enqueueing the close to the run's "
        f"`succeeded` (measured {figures['measured_at']}): {runs}.",
    ]
    if "speedup_2_vs_1" in figures:
        lines.append(
            f"A second worker process made the close **{figures['speedup_2_vs_1']}×** as fast; "
            f"a pure CPU loop got {figures['cpu_loop_2_vs_1']}× from a second process at the "
            "time, the most this machine could give."
        )
    inline = figures.get("in_process")
    if inline is None:  # figures from before the bench measured CPU
        per_org = figures["runs"][0]["seconds"] / figures["orgs"]
        line = f"On one worker process the close took {per_org:.2f} s per org"
        if close:
            cpu = sum(stage["cpu_seconds"] for stage in close["stages"]) / close["orgs"]
            line += f"; the in-process close above spent {cpu:.2f} s of CPU per org"
        return [*lines, line + ".", ""]
    lines += [
        "",
        "CPU per org, the worker process and its pool from start to stop (their rusage) against "
        "the same close in one process without a broker (one render process), same run, same "
        "emulator and SMTP sink; the issue's target is at most 1.2×:",
        "",
        "| close | wall | CPU | CPU per org | against in process |",
        "|---|---:|---:|---:|---:|",
        f"| in process | {seconds(inline['seconds'])} | {seconds(inline['cpu_seconds'])} "
        f"| {inline['cpu_per_org']:.3f} s | 1.00× |",
    ]
    for run in figures["runs"]:
        lines.append(
            f"| {run['concurrency']} worker process(es) | {seconds(run['seconds'])} "
            f"| {seconds(run['worker_cpu_seconds'])} | {run['worker_cpu_per_org']:.3f} s "
            f"| **{run['cpu_per_org_vs_in_process']:.2f}×** |"
        )
    lines += [
        "",
        "A worker process keeps one ledger engine per database across its tasks, migrated "
        "once (`billing.db.engine.keep_engines`, set when a worker process starts), and one "
        "statement renderer (`shared_renderer`); each invoice is still a render task and an "
        "email task, and each email task opens its own SMTP connection.",
    ]
    return [*lines, ""]


def console_section(folder: Path) -> list[str]:
    """The console's Review and invoice pages over real HTTP (`make bench-console`)."""
    figures = load(folder, "console.json")
    if not figures:
        return []
    target = figures["targets"]
    lines = [
        "## The console's pages",
        "",
        f"`make bench-console` seeds two months of {figures['orgs']:,} synthetic orgs "
        f"({figures['seed']['invoices']:,} invoices a month, without rendering) in a throwaway "
        "PostgreSQL database, starts `billing serve` as its own process, signs a viewer in "
        "through the login form and GETs each page "
        f"{next(iter(figures['pages'].values()))['requests']} times over real HTTP after "
        f"three untimed ones (measured {figures['measured_at']}, load average "
        f"{figures['load_average']}). Targets: median under {target['median_ms']:g} ms, p95 "
        f"under {target['p95_ms']:g} ms.",
        "",
        "| page | path | median | p95 | KiB | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, page in figures["pages"].items():
        lines.append(
            f"| {name} | `{page['path']}` | {page['median_ms']} ms | {page['p95_ms']} ms | "
            f"{page['bytes'] // 1024} | {'met' if page['meets_target'] else 'MISSED'} |"
        )
    lines += [
        "",
        "The Review page reads the period's live invoices and the previous month's totals as "
        "plain driver rows and builds the board (org_changes, flags, totals) only when those "
        "rows differ from the last build's, compared value by value; sorting, filtering and "
        "paging then work on the built rows, and only the 100 rows shown are rounded and "
        "rendered.",
        "",
    ]
    return lines


def document(folder: Path, close: dict[str, Any] | None, scaling: dict[str, Any] | None) -> str:
    lines = [
        "# Performance",
        "",
        "How long the month close takes, stage by stage, beside what this machine can do at "
        "best for each stage (its floor, measured in the same run on the same data), and how "
        "time and memory grow with the number of orgs. Written by `bench/report.py` from "
        "`bench/results/*.json`; run the benchmarks again rather than editing the figures.",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "make bench                     # rating, fetch memory, and the close of 1,000 orgs "
        "with its floors",
        "make bench-close BENCH_ORGS=N  # the close of another number of orgs",
        "make bench-scale               # the close at 100, 1,000 and 5,000 orgs, each in its "
        "own process",
        "make bench-workers             # the close of 200 orgs on 1, then 2 Celery worker "
        "processes",
        "make bench-console             # the console's Review and invoice pages at 5,000 orgs",
        "make bench-render              # statements printed by WeasyPrint and by headless "
        "Chromium",
        "make bench-rerender            # statements render in full, then with nothing "
        "changed; a re-close with nothing new",
        "make bench-render-growth       # a statement's render time against the page "
        "before issue 19",
        "```",
        "",
        "The close runs against `billing emulator` (its own process, loopback) and a throwaway "
        "PostgreSQL database on 127.0.0.1:5432 (created per run and dropped after; `make` "
        "starts PostgreSQL when it is installed but stopped); email goes to an aiosmtpd sink "
        "on loopback. Every stage calls the project's own functions (`fetch_and_snapshot`, "
        "`check_completeness`, `iter_snapshot_orgs` and `rate_orgs`, `store_period`, "
        "`finalize_drafts`, `iter_statements`, `render_pdfs`, `statement_csv`, "
        "`OutboxSender`, `PeriodReportWriter`), streaming as the close does. "
        "`bench/close.py` explains each floor; `make bench-close` also times "
        "`billing.close.inline.close_period` end to end on a fresh database.",
        "",
    ]
    if close:
        info = close["machine"]
        loads = ", ".join(f"{when} {value}" for when, value in close["load_average"].items())
        lines += [
            f"Measured {close['measured_at']} on {info['cpus']} × {info['cpu']}, Python "
            f"{info['python']}, PostgreSQL {info['postgresql']}, WeasyPrint "
            f"{info['weasyprint']}; one-minute load average during the run: {loads}.",
            "",
        ]
        lines += close_section(close) + render_section(close)
    else:
        lines += ["No close figures yet: run `make bench`.", ""]
    lines += (
        scaling_section(scaling)
        + render_peer_section(folder)
        + rerender_section(folder)
        + render_growth_section(folder)
        + workers_section(folder, close)
        + targets_section(close, scaling)
        + console_section(folder)
    )
    lines += [DIAGNOSIS, *other_benchmarks(folder)]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orgs", type=int, default=1_000, help="whose close-N.json to show")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args()
    close = load(args.results_dir, f"close-{args.orgs}.json")
    scaling = load(args.results_dir, "scaling.json")
    args.output.write_text(document(args.results_dir, close, scaling), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
