"""Benchmark: the month close of N synthetic orgs against the emulator and PostgreSQL, stage by
stage, each stage beside its floor measured in the same run on the same data.

    make bench-close [BENCH_ORGS=N]
    .venv/bin/python -m bench.close [--orgs N] [--processes P] [--no-floors] [--end-to-end]

The emulator runs as its own process on loopback and the database is a throwaway PostgreSQL
database, dropped at the end. The stages call the project's own code, in the order a close runs
them: fetch (with the snapshot store), completeness check, rate, store invoices, finalize, load
statements, render PDFs (`billing.statements.parallel`, P processes), write CSVs, email (to an
aiosmtpd sink in this process) and the period's reports. The floors:

- fetch: the emulator's own serving time for the same pages (plain GETs, bodies read, no checks);
- snapshot and invoice stores: the same rows loaded with PostgreSQL COPY (psycopg 3) into copies
  of the same tables (same columns, indexes, constraints and foreign keys);
- render: the same statement HTML printed by bare WeasyPrint (one FontConfiguration, the same
  compiled stylesheets and options), on an evenly spread sample of the statements, one process;
  the sample is also rendered with 1 and with 2 processes for the parallel speed-up.

Each stage's peak RSS is its own: the kernel's high-water mark is reset between stages.
Figures go to bench/results/close-N.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

import httpx
import psycopg
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from bench.support import (
    RESULTS,
    StageClock,
    children_peak_rss_mib,
    cpu_seconds,
    emulator_process,
    free_port,
    load_average,
    machine,
    parallel_capacity,
    throwaway_database,
    write_figures,
)
from billing.close.fetch import (
    check_completeness,
    describe_query,
    fetch_and_snapshot,
    http_client,
    usage_client,
)
from billing.close.inline import close_period
from billing.close.pricing import load_pricing
from billing.close.publish import load_cost_centre_map, report_writer, run_facts
from billing.close.steps import in_batches
from billing.config import EXAMPLES, Settings
from billing.db.engine import open_ledger
from billing.db.ledger import finalize_drafts, store_period
from billing.db.locks import write_transaction
from billing.db.period_reads import iter_statements, period_org_totals
from billing.db.repository import (
    RunOutcome,
    finish_run,
    load_statements,
    start_run,
)
from billing.db.snapshots import iter_snapshot_orgs
from billing.db.tables import Invoice, InvoiceCharge, InvoiceLine
from billing.domain import RatingReport, Statement
from billing.email.messages import StatementDocuments
from billing.email.outbox import OutboxSender
from billing.periods import BillingPeriod
from billing.rating import rate_orgs
from billing.statements.csv_files import statement_csv
from billing.statements.files import period_folder, safe_stem, write_atomically
from billing.statements.parallel import default_render_processes, render_pdfs
from billing.statements.pdf import (
    SHIPPED_TEMPLATES,
    STYLESHEET,
    StatementRenderer,
    in_own_stack_chunk,
    template_environment,
)
from billing.usage.client import USAGE_PATH, UsageQuery

T = TypeVar("T")

PERIOD = BillingPeriod.parse("2026-10")
API_KEY = "bench-key"
RENDER_TARGET = 1.15
STORE_TARGET = 2.0
SPEEDUP_TARGET = 1.8


def quiet(_message: str) -> None:
    """Progress lines of the project's stages are not printed while they are timed."""


# --------------------------------------------------------------------------- set-up


def write_org_directory(path: Path, orgs: int) -> Path:
    """The example directory (its cards, overrides and discounts) plus one entry with one
    billing contact for every other synthetic org, so that every statement is emailed. Written
    entry by entry: the benchmark's own set-up must not leave a big heap in the measured
    process."""
    directory = yaml.safe_load((EXAMPLES / "orgs.yaml").read_text(encoding="utf-8"))
    examples = directory.pop("orgs")
    known = {entry["org_id"] for entry in examples}
    with path.open("w", encoding="utf-8") as out:
        out.write(yaml.safe_dump(directory, sort_keys=False) + "orgs:\n")
        for entry in examples:
            out.write(yaml.safe_dump([entry], sort_keys=False))
        for number in range(1, orgs + 1):
            org_id = f"org-{number:04d}"
            if org_id in known:
                continue
            entry = {
                "org_id": org_id,
                "name": f"Synthetic Org {number:04d}",
                "address": f"Synthetic Org {number:04d} Ltd\n{number} Example Street\nSpringfield",
                "email": [f"billing@{org_id}.example"],
            }
            out.write(yaml.safe_dump([entry], sort_keys=False))
    return path


def bench_settings(database_url: str, base_url: str, folder: Path, smtp_port: int) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        mka1_base_url=base_url,
        mka1_api_key=SecretStr(API_KEY),
        mka1_timeout_seconds=600,
        mka1_page_deadline_seconds=1200,
        orgs=folder / "orgs.yaml",
        output_dir=folder / "statements",
        email_backend="smtp",
        smtp_url=SecretStr(f"smtp://127.0.0.1:{smtp_port}"),
        smtp_rate_per_second=1_000_000,
        broker_url=None,
    )


# --------------------------------------------------------------------------- the emulator


def serving_seconds(base_url: str, params: dict[str, str], first_page_only: bool = False) -> float:
    """The emulator's time to serve every page of a query: plain GETs with their bodies read.

    The cursor is read from each body outside the clock; nothing is validated or kept."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}
    seconds = 0.0
    request: dict[str, str] = dict(params)
    with httpx.Client(timeout=1200) as http:
        while True:
            started = time.perf_counter()
            response = http.get(base_url + USAGE_PATH, params=request, headers=headers)
            body = response.content
            seconds += time.perf_counter() - started
            response.raise_for_status()
            page = json.loads(body)
            if first_page_only or not page["has_more"]:
                return seconds
            request = {**params, "page": page["next_page"]}


# --------------------------------------------------------------------------- the COPY floor

# Each table's rows of one run, in foreign-key order.
SNAPSHOT_TABLES = {"usage_snapshot": "SELECT * FROM usage_snapshot WHERE run_id = {run}"}
INVOICE_TABLES = {
    "invoice": "SELECT * FROM invoice WHERE run_id = {run}",
    "invoice_charge": "SELECT c.* FROM invoice_charge c JOIN invoice i ON i.id = c.invoice_id "
    "WHERE i.run_id = {run}",
    "invoice_line": "SELECT l.* FROM invoice_line l JOIN invoice i ON i.id = l.invoice_id "
    "WHERE i.run_id = {run}",
    "invoice_daily_usage": "SELECT d.* FROM invoice_daily_usage d "
    "JOIN invoice i ON i.id = d.invoice_id WHERE i.run_id = {run}",
}
COPY_BATCH_ROWS = 50_000


def copy_floor_seconds(database_url: str, tables: dict[str, str], run_id: int) -> float:
    """Seconds to load a run's rows of `tables` with COPY into empty copies of those tables
    (LIKE ... INCLUDING ALL, plus the same foreign keys), in one transaction.

    The rows are read into Python first, outside the clock, so the floor is what a COPY-based
    store would cost: adapting the values and loading them."""
    with psycopg.connect(database_url) as reader, psycopg.connect(database_url) as loader:
        foreign_keys: list[tuple[str, str, str]] = []
        for table in tables:
            loader.execute(f"CREATE TABLE copy_floor_{table} (LIKE {table} INCLUDING ALL)")
            foreign_keys += [
                (table, name, definition)
                for name, definition in loader.execute(
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = %s::regclass AND contype = 'f'",
                    (table,),
                )
            ]
        for table, name, definition in foreign_keys:
            for original in tables:  # references among the copied tables point to the copies
                definition = definition.replace(
                    f"REFERENCES {original}(", f"REFERENCES copy_floor_{original}("
                )
            loader.execute(f'ALTER TABLE copy_floor_{table} ADD CONSTRAINT "c_{name}" {definition}')
        loader.commit()
        seconds = 0.0
        for table, rows_of_run in tables.items():
            with reader.cursor(name=f"read_{table}") as source:
                source.execute(sql.SQL(rows_of_run).format(run=sql.Literal(run_id)))
                while batch := source.fetchmany(COPY_BATCH_ROWS):
                    columns = ", ".join(column.name for column in source.description or ())
                    started = time.perf_counter()
                    with loader.cursor().copy(
                        f"COPY copy_floor_{table} ({columns}) FROM STDIN"
                    ) as copy:
                        for row in batch:
                            copy.write_row(row)
                    seconds += time.perf_counter() - started
            reader.rollback()
        started = time.perf_counter()
        loader.commit()
        return seconds + time.perf_counter() - started


# --------------------------------------------------------------------------- the render floor


def spread_sample(statements: Sequence[Statement], size: int) -> list[Statement]:
    """`size` statements evenly spread over the list (orgs are in id order, sizes are not)."""
    if size >= len(statements):
        return list(statements)
    return [statements[index * len(statements) // size] for index in range(size)]


class BareWeasyPrint:
    """Bare WeasyPrint: one FontConfiguration, the same stylesheets compiled once, options."""

    def __init__(self, page_size: str, stylesheet_text: str | None = None) -> None:
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration

        self.font_config = FontConfiguration()
        self.base_url = SHIPPED_TEMPLATES.resolve().as_uri() + "/"
        css_path = SHIPPED_TEMPLATES / "assets" / STYLESHEET
        main = (
            CSS(filename=str(css_path), font_config=self.font_config)
            if stylesheet_text is None
            else CSS(
                string=stylesheet_text, base_url=css_path.as_uri(), font_config=self.font_config
            )
        )
        self.stylesheets = [
            main,
            CSS(string=f"@page {{ size: {page_size}; }}", font_config=self.font_config),
        ]
        self.image_cache: dict[str, Any] = {}

    def pdf(self, html: str, **options: Any) -> bytes:
        from weasyprint import HTML

        options.setdefault("cache", self.image_cache)
        pdf: bytes = HTML(string=html, base_url=self.base_url).write_pdf(
            stylesheets=self.stylesheets, font_config=self.font_config, **options
        )
        return pdf


def render_floor(settings: Settings, sample: Sequence[Statement]) -> dict[str, float]:
    """The project's render path (`render_pdfs`, one process) against bare WeasyPrint on the
    same HTML, alternating PDF by PDF so that drift in the machine's speed falls on both.

    The bare PDFs are printed while the project's generator waits between two PDFs, that is
    with the garbage collector kept off the existing objects as it keeps it while rendering:
    the floor gets the same conditions, so the ratio is the project's own cost (template,
    chart, URL fetcher) over WeasyPrint's. Both print in a frame-stack chunk of their own
    (`in_own_stack_chunk`), so neither pays CPython 3.11's chunk mapping at a stack depth where
    WeasyPrint's recursion keeps crossing a chunk boundary."""

    renderer = StatementRenderer.from_settings(settings)
    bare = BareWeasyPrint(settings.page_size)
    pages = [renderer.html(statement) for statement in sample]
    for _warm_up in render_pdfs(settings, sample[:1], 1):
        in_own_stack_chunk(bare.pdf, pages[0])
    project = render_pdfs(settings, sample, 1)
    project_seconds = bare_seconds = 0.0
    for index, html in enumerate(pages):
        for which in ("project", "bare") if index % 2 == 0 else ("bare", "project"):
            started = time.perf_counter()
            if which == "project":
                next(project)
                project_seconds += time.perf_counter() - started
            else:
                in_own_stack_chunk(bare.pdf, html)
                bare_seconds += time.perf_counter() - started
    project.close()
    return {"project_seconds": project_seconds, "bare_seconds": bare_seconds}


def process_speedup(
    settings: Settings, sample: Sequence[Statement], repeat: int = 2
) -> dict[str, float]:
    """Wall and CPU time of rendering the sample with 1 process (in this process, as a close
    with BILLING_RENDER_PROCESSES=1 does) and with 2 (a pool of two forked workers, its start
    included), streamed through `render_pdfs` as a close streams them, alternated `repeat`
    times; the best of each, as other work on the machine only ever slows a run down."""
    timings: dict[str, float] = {}
    for _round in range(repeat):
        for processes in (1, 2):
            started, cpu_started = time.perf_counter(), cpu_seconds()
            for _statement, _pdf in render_pdfs(settings, iter(sample), processes):
                pass
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
            key = f"processes_{processes}_seconds"
            if seconds < timings.get(key, float("inf")):
                timings[key] = seconds
                timings[f"processes_{processes}_cpu_seconds"] = cpu
    return timings


def option_study(settings: Settings, sample: Sequence[Statement]) -> list[dict[str, object]]:
    """Bare WeasyPrint on the same HTML with one option changed at a time: seconds per PDF and
    bytes per PDF against the options the project uses."""
    renderer = StatementRenderer.from_settings(settings)
    pages = [renderer.html(statement) for statement in sample]
    shipped_css = (SHIPPED_TEMPLATES / "assets" / STYLESHEET).read_text(encoding="utf-8")
    fixed = BareWeasyPrint(settings.page_size)
    automatic = BareWeasyPrint(
        settings.page_size, shipped_css.replace("table-layout: fixed;", "table-layout: auto;")
    )
    variants: list[tuple[str, BareWeasyPrint, dict[str, Any]]] = [
        ("as shipped (fonts subset, compressed, image cache, table-layout: fixed)", fixed, {}),
        ("no image cache across documents", fixed, {"cache": None}),
        ("full fonts embedded (no subsetting)", fixed, {"full_fonts": True}),
        ("font hinting kept", fixed, {"hinting": True}),
        ("uncompressed PDF", fixed, {"uncompressed_pdf": True}),
        ("table-layout: auto", automatic, {}),
    ]
    for _label, printer, options in variants:
        printer.pdf(pages[0], **options)
    results = []
    for label, printer, options in variants:
        gc.freeze()
        started = time.perf_counter()
        size = sum(len(printer.pdf(html, **options)) for html in pages)
        seconds = time.perf_counter() - started
        gc.unfreeze()
        results.append(
            {
                "variant": label,
                "seconds_per_pdf": round(seconds / len(pages), 4),
                "kib_per_pdf": round(size / len(pages) / 1024, 1),
            }
        )
    baseline = float(str(results[0]["seconds_per_pdf"]))
    for result in results:
        result["relative_time"] = round(float(str(result["seconds_per_pdf"])) / baseline, 2)
    return results


# --------------------------------------------------------------------------- the close


def line_item_count(engine: Engine, run_id: int) -> tuple[int, int]:
    """(charges, lines) stored by a run."""
    with Session(engine) as session:
        invoice_ids = select(col(Invoice.id)).where(col(Invoice.run_id) == run_id)
        charges = session.execute(
            select(func.count()).where(col(InvoiceCharge.invoice_id).in_(invoice_ids))
        ).scalar_one()
        lines = session.execute(
            select(func.count()).where(col(InvoiceLine.invoice_id).in_(invoice_ids))
        ).scalar_one()
    return int(charges), int(lines)


def usage_query(settings: Settings) -> UsageQuery:
    """The query a close of the period sends (by session kind too when a card needs it)."""
    pricing = load_pricing(settings, PERIOD)
    return pricing.usage_query((), settings.mka1_bucket_width, settings.mka1_group_by_extra)


def run_stages(
    settings: Settings, engine: Engine, clock: StageClock, processes: int, figures: dict[str, Any]
) -> int:
    """The close, stage by stage, with the project's own functions, streaming as the close
    does (no stage holds the period's statements). Returns the run id."""
    pricing = load_pricing(settings, PERIOD)
    query = usage_query(settings)
    now = datetime.now(UTC)
    with Session(engine) as session:
        run_id = start_run(
            session,
            PERIOD,
            "bench",
            settings.mka1_base_url,
            now,
            request_params=describe_query(settings.mka1_base_url, query),
            started_by="bench",
        )
    outcome = RunOutcome()
    with http_client(settings) as http:
        client = usage_client(settings, http)
        timed_pages, iter_pages = Timer(), client.iter_pages
        client.iter_pages = lambda query: timed_pages.wrap(iter_pages(query))  # type: ignore[method-assign]
        with clock.stage("fetch + snapshot", "results") as both:
            fetched = fetch_and_snapshot(client, query, engine, run_id, quiet)
        results = fetched.report.usage_results
        split_stage(
            clock,
            both,
            ("fetch", timed_pages.seconds, timed_pages.cpu_seconds, results, "results"),
            "snapshot store",
            "rows",
            "the page COPYs, commits and per-org sums between pages",
        )
        figures.update(usage_results=results, pages=fetched.pages)
        with clock.stage("completeness check", "results") as stage:
            check_completeness(client, query, fetched, quiet)
            stage.count = client.stats.results
            figures["completeness_pages"] = client.stats.pages
    outcome.pages_fetched, outcome.usage_checksum = fetched.pages, fetched.checksum
    outcome.completeness = fetched.completeness
    del fetched

    report = RatingReport()
    rating = Timer()
    invoices = 0
    with (
        clock.stage("rate + store", "rows") as both,
        write_transaction(engine) as session,
        Session(engine) as reading,
    ):
        stamp = datetime.now(UTC)
        due = stamp + timedelta(days=settings.payment_terms_days)
        rated = rating.wrap(
            rate_orgs(
                iter_snapshot_orgs(reading, run_id),
                pricing.account_for,
                pricing.card_for,
                report,
            )
        )
        for batch in in_batches(rated, settings.rate_batch_orgs):
            invoices += len(batch)
            store_period(
                session,
                run_id=run_id,
                period=PERIOD,
                rated=batch,
                now=stamp,
                due_at=due,
                empty_invoice=pricing.empty_invoice,
                org_scope={invoice.org.org_id for invoice in batch},
            )
    outcome.report = report
    charges, lines = line_item_count(engine, run_id)
    split_stage(
        clock,
        both,
        ("rate", rating.seconds, rating.cpu_seconds, results, "results"),
        "store invoices",
        "rows",
        f"{invoices:,} invoices, {charges:,} charges, {lines:,} lines",
        count=charges + lines,
    )
    clock.named("rate").notes.append("reading the snapshot back org by org, in org-id order")
    figures.update(invoices=invoices, charges=charges, lines=lines)
    with clock.stage("finalize", "invoices") as stage, write_transaction(engine) as session:
        stamp = datetime.now(UTC)
        stage.count = finalize_drafts(
            session, PERIOD, stamp, stamp + timedelta(days=settings.payment_terms_days)
        ).count
    with clock.stage("load statements", "statements") as stage:
        largest = 0
        for statement in iter_statements(engine, PERIOD):
            largest = max(largest, len(statement.lines))
            stage.count += 1
        stage.notes.append("streamed in batches; every later stage streams them again")
    figures["largest_statement_lines"] = largest

    folder = period_folder(settings.output_dir, str(PERIOD))
    figures["load_average"]["before_render"] = load_average()
    with clock.stage("render PDFs", "PDFs") as stage:
        pdf_bytes = 0
        for statement, pdf in render_pdfs(settings, iter_statements(engine, PERIOD), processes):
            write_atomically(folder, f"{safe_stem(statement.org_id)}.pdf", pdf)
            pdf_bytes += len(pdf)
            stage.count += 1
    stage.notes.append(
        f"{processes} process(es); {pdf_bytes / max(1, stage.count) / 1024:.0f} KiB per PDF"
    )
    figures["render_workers_peak_rss_mib"] = round(children_peak_rss_mib(), 1)
    with clock.stage("write CSVs", "CSVs") as stage:
        for statement in iter_statements(engine, PERIOD):
            write_atomically(
                folder,
                f"{safe_stem(statement.org_id)}.csv",
                statement_csv(statement, issuer_name=settings.issuer_name),
            )
            stage.count += 1

    environment = template_environment(settings.templates_dir, settings.locale)
    sink = Controller(Sink(), hostname="127.0.0.1", port=smtp_port_of(settings))
    sink.start()
    try:
        with clock.stage("email", "messages") as stage:
            with OutboxSender(settings, engine, PERIOD, environment, folder) as outbox:
                for statement in iter_statements(engine, PERIOD):
                    stem = safe_stem(statement.org_id)
                    documents = StatementDocuments(
                        statement=statement,
                        pdf=(folder / f"{stem}.pdf").read_bytes(),
                        csv=(folder / f"{stem}.csv").read_bytes(),
                        stem=stem,
                    )
                    outbox.send_for(documents)
            stage.count = outbox.report.messages
            stage.notes.append(f"to an aiosmtpd sink: {outbox.report.describe()}")
    finally:
        sink.stop()

    with clock.stage("summary and reports", "statements") as stage:
        with Session(engine) as session:
            previous = period_org_totals(session, PERIOD.previous())
            facts = run_facts(session, run_id, settings, outcome.report, outcome)
        with report_writer(settings, folder, PERIOD, load_cost_centre_map(settings)) as writer:
            for statement in iter_statements(engine, PERIOD):
                writer.add(statement)
                stage.count += 1
            writer.finish(previous, facts)
    outcome.status, outcome.invoice_count = "succeeded", invoices
    with Session(engine) as session:
        finish_run(session, run_id, outcome, datetime.now(UTC))
    return run_id


def split_stage(
    clock: StageClock,
    both: Any,
    inner: tuple[str, float, float, int, str],
    rest_name: str,
    rest_unit: str,
    note: str,
    count: int | None = None,
) -> None:
    """Replace a stage timed as a whole by its two parts: the `inner` one timed inside it
    (name, seconds, CPU seconds, count, unit) and the rest (the same peak RSS for both)."""
    name, seconds, cpu, inner_count, unit = inner
    clock.stages.remove(both)
    clock.stages.append(
        dataclasses.replace(
            both, name=name, seconds=seconds, cpu_seconds=cpu, count=inner_count, unit=unit
        )
    )
    clock.stages.append(
        dataclasses.replace(
            both,
            name=rest_name,
            seconds=both.seconds - seconds,
            cpu_seconds=both.cpu_seconds - cpu,
            count=inner_count if count is None else count,
            unit=rest_unit,
            notes=[note],
        )
    )


class Timer:
    """Wall and CPU time spent producing an iterator's items (not in the consumer's body)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0

    def wrap(self, items: Iterator[T]) -> Iterator[T]:
        while True:
            started, cpu = time.perf_counter(), time.process_time()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - started
                self.cpu_seconds += time.process_time() - cpu
            yield item


def smtp_port_of(settings: Settings) -> int:
    assert settings.smtp_url is not None
    return int(settings.smtp_url.get_secret_value().rsplit(":", 1)[1])


def end_to_end_close(settings: Settings) -> dict[str, float]:
    """`billing.close.inline.close_period` as one call, on its own fresh database: the close as the
    service runs it (one streamed pass renders, writes, emails and reports)."""
    from bench.support import peak_rss_mib

    sink = Controller(Sink(), hostname="127.0.0.1", port=smtp_port_of(settings))
    sink.start()
    try:
        with throwaway_database("billing_bench_e2e") as database_url:
            own = settings.model_copy(update={"database_url": database_url})
            with TemporaryDirectory(prefix="billing-bench-e2e-") as folder:
                own = own.model_copy(update={"output_dir": Path(folder)})
                started = time.perf_counter()
                close_period(own, PERIOD, trigger="bench", progress=quiet)
                seconds = time.perf_counter() - started
    finally:
        sink.stop()
    return {"seconds": round(seconds, 2), "peak_rss_mib_so_far": round(peak_rss_mib(), 1)}


def run_bench(
    orgs: int,
    seed: int,
    processes: int,
    page_size: int,
    sample_size: int,
    floors: bool,
    end_to_end: bool,
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "benchmark": "close",
        "orgs": orgs,
        "seed": seed,
        "period": str(PERIOD),
        "processes": processes,
        "page_size": page_size,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": {"start": load_average()},
        "machine": machine(),
    }
    clock = StageClock()
    with (
        TemporaryDirectory(prefix="billing-bench-") as scratch,
        throwaway_database() as database_url,
        emulator_process(orgs, seed, page_size) as base_url,
    ):
        folder = Path(scratch)
        write_org_directory(folder / "orgs.yaml", orgs)
        settings = bench_settings(database_url, base_url, folder, free_port())
        settings = settings.model_copy(update={"render_processes": processes})
        engine = open_ledger(settings, migrate=True)
        try:
            query = usage_query(settings)
            reference = dataclasses.replace(query, group_by=("org_id",))
            figures["emulator_generation_seconds"] = round(
                serving_seconds(base_url, query.params(), first_page_only=True)
                + serving_seconds(base_url, reference.params(), first_page_only=True),
                2,
            )
            run_id = run_stages(settings, engine, clock, processes, figures)
            figures["close_seconds"] = round(sum(stage.seconds for stage in clock.stages), 2)
            figures["peak_rss_mib"] = round(max(stage.peak_rss_mib for stage in clock.stages), 1)
            if floors:
                with Session(engine) as session:
                    statements = load_statements(session, PERIOD)
                figures["render"] = measure_floors(
                    settings, database_url, run_id, query, statements, clock, sample_size
                )
                del statements
            if end_to_end:
                figures["end_to_end_close"] = end_to_end_close(settings)
        finally:
            engine.dispose()
    figures["load_average"]["end"] = load_average()
    figures["peak_rss_is_per_stage"] = clock.peak_is_per_stage
    figures["stages"] = [stage.as_json() for stage in clock.stages]
    figures["targets"] = verdicts(figures)
    return figures


def measure_floors(
    settings: Settings,
    database_url: str,
    run_id: int,
    query: UsageQuery,
    statements: Sequence[Statement],
    clock: StageClock,
    sample_size: int,
) -> dict[str, Any]:
    base_url = settings.mka1_base_url
    fetch = clock.named("fetch")
    fetch.floor_seconds = serving_seconds(base_url, query.params())
    fetch.floor = "emulator serving the same pages"
    completeness = clock.named("completeness check")
    reference = dataclasses.replace(query, group_by=("org_id",))
    completeness.floor_seconds = serving_seconds(base_url, reference.params())
    completeness.floor = "emulator serving the same pages"
    snapshot = clock.named("snapshot store")
    snapshot.floor_seconds = copy_floor_seconds(database_url, SNAPSHOT_TABLES, run_id)
    snapshot.floor = "COPY of the same rows"
    store = clock.named("store invoices")
    store.floor_seconds = copy_floor_seconds(database_url, INVOICE_TABLES, run_id)
    store.floor = "COPY of the same rows"

    sample = spread_sample(statements, sample_size)
    floor = render_floor(settings, sample)
    load_before_speedup = load_average()
    capacity_before = parallel_capacity()
    speedup = process_speedup(settings, sample)
    capacity_after = parallel_capacity()
    render = clock.named("render PDFs")
    render.floor_seconds = floor["bare_seconds"]
    render.sample_ratio = floor["project_seconds"] / floor["bare_seconds"]
    render.floor = f"bare WeasyPrint, same HTML, {len(sample)}-PDF sample"
    render.notes.append(
        f"ratio on the sample: project {floor['project_seconds']:.2f}s vs bare "
        f"{floor['bare_seconds']:.2f}s"
    )
    studied = spread_sample(sample, min(len(sample), 16))
    return {
        "sample": len(sample),
        "sample_mean_lines": round(sum(len(s.lines) for s in sample) / len(sample), 1),
        "mean_lines": round(sum(len(s.lines) for s in statements) / len(statements), 1),
        "project_seconds": round(floor["project_seconds"], 3),
        "bare_seconds": round(floor["bare_seconds"], 3),
        "ratio_to_bare": round(floor["project_seconds"] / floor["bare_seconds"], 3),
        "processes_1_seconds": round(speedup["processes_1_seconds"], 3),
        "processes_2_seconds": round(speedup["processes_2_seconds"], 3),
        "processes_1_cpu_seconds": round(speedup["processes_1_cpu_seconds"], 3),
        "processes_2_cpu_seconds": round(speedup["processes_2_cpu_seconds"], 3),
        "speedup_2_vs_1": round(speedup["processes_1_seconds"] / speedup["processes_2_seconds"], 2),
        "load_average_before_speedup": load_before_speedup,
        "machine_2_vs_1_process": round((capacity_before + capacity_after) / 2, 2),
        "option_study_sample": len(studied),
        "options": option_study(settings, studied),
    }


def verdicts(figures: dict[str, Any]) -> dict[str, Any]:
    """Each target of issue 9 that this run can judge: the figure, the target, met or not."""
    stages = {stage["stage"]: stage for stage in figures.get("stages", [])}
    targets: dict[str, Any] = {}
    render = figures.get("render")
    if render:
        targets["render_vs_bare_weasyprint"] = {
            "value": render["ratio_to_bare"],
            "target": f"<= {RENDER_TARGET}",
            "met": render["ratio_to_bare"] <= RENDER_TARGET,
        }
        targets["render_2_vs_1_process"] = {
            "value": render["speedup_2_vs_1"],
            "target": f">= {SPEEDUP_TARGET}",
            "met": render["speedup_2_vs_1"] >= SPEEDUP_TARGET,
        }
    store = stages.get("store invoices", {})
    if store.get("ratio_to_floor") is not None:
        targets["store_vs_copy"] = {
            "value": store["ratio_to_floor"],
            "target": f"<= {STORE_TARGET}",
            "met": store["ratio_to_floor"] <= STORE_TARGET,
        }
    return targets


# --------------------------------------------------------------------------- output


def throughput(stage: dict[str, Any]) -> str:
    if not stage["per_second"]:
        return ""
    return f"{stage['per_second']:,.0f} {stage['unit']}/s"


def print_table(figures: dict[str, Any]) -> None:
    print(
        f"close of {figures['orgs']:,} orgs ({figures['period']}): "
        f"{figures['usage_results']:,} usage results in {figures['pages']} pages, "
        f"{figures['invoices']:,} invoices, {figures['charges'] + figures['lines']:,} line items"
        f"; render with {figures['processes']} process(es)"
    )
    header = (
        f"{'stage':<21}{'time':>9}{'CPU':>9}  {'throughput':<22}{'peak RSS':>10}  "
        f"{'floor (same run)':<52}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    for stage in figures["stages"]:
        floor = ""
        if stage["floor_seconds"] is not None:
            floor = f"{stage['floor']} {stage['floor_seconds']:.2f}s"
        ratio = f"{stage['ratio_to_floor']:.2f}x" if stage["ratio_to_floor"] is not None else ""
        print(
            f"{stage['stage']:<21}{stage['seconds']:>8.2f}s{stage['cpu_seconds']:>8.2f}s  "
            f"{throughput(stage):<22}{stage['peak_rss_mib']:>6.0f} MiB  {floor:<52}{ratio:>7}"
        )
    print("-" * len(header))
    print(
        f"{'close (sum)':<21}{figures['close_seconds']:>8.2f}s{'':>9}  {'':<22}"
        f"{figures['peak_rss_mib']:>6.0f} MiB  (render workers peak "
        f"{figures['render_workers_peak_rss_mib']:.0f} MiB each; emulator data generation "
        f"{figures['emulator_generation_seconds']:.1f}s, not counted)"
    )
    loads = ", ".join(f"{when} {value}" for when, value in figures["load_average"].items())
    print(f"load average (other work on the machine skews the figures): {loads}")
    render = figures.get("render")
    if render:
        print(
            f"render: project {render['ratio_to_bare']:.3f}x bare WeasyPrint on "
            f"{render['sample']} PDFs (target <= {RENDER_TARGET}); 2 processes "
            f"{render['speedup_2_vs_1']:.2f}x the throughput of 1 (target >= {SPEEDUP_TARGET}: "
            f"{render['processes_1_seconds']:.1f}s -> {render['processes_2_seconds']:.1f}s); "
            f"a pure CPU loop got {render['machine_2_vs_1_process']:.2f}x from 2 processes "
            "at the time"
        )
        print("render options (bare WeasyPrint, same HTML):")
        for option in render["options"]:
            print(
                f"  {option['variant']:<72}{option['seconds_per_pdf'] * 1000:>7.0f} ms/PDF "
                f"{option['relative_time']:>5.2f}x {option['kib_per_pdf']:>7.0f} KiB"
            )
    if "end_to_end_close" in figures:
        print(
            f"billing.close.inline.close_period end to end (one streamed pass): "
            f"{figures['end_to_end_close']['seconds']:.1f}s"
        )
    for name, verdict in figures["targets"].items():
        print(
            f"target {name}: {verdict['value']} ({verdict['target']}): "
            f"{'met' if verdict['met'] else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orgs", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=default_render_processes())
    parser.add_argument("--page-size", type=int, default=500, help="usage results per page")
    parser.add_argument("--sample", type=int, default=80, help="PDFs in the render floor sample")
    parser.add_argument("--no-floors", dest="floors", action="store_false")
    parser.add_argument(
        "--end-to-end",
        action="store_true",
        help="also time billing.close.inline.close_period in one call, as the service runs it",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    figures = run_bench(
        args.orgs,
        args.seed,
        args.processes,
        args.page_size,
        args.sample,
        args.floors,
        args.end_to_end,
    )
    print_table(figures)
    write_figures(args.results_dir, f"close-{args.orgs}.json", figures)


if __name__ == "__main__":
    main()
