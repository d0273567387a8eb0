"""Benchmark: the console's pages over real HTTP against `billing serve` on a period of 5,000
orgs in a throwaway PostgreSQL database.

    make bench-console [BENCH_CONSOLE_ORGS=N] [BENCH_CONSOLE_REQUESTS=N]
    .venv/bin/python -m bench.console [--orgs N] [--requests N]

The ledger is seeded without rendering anything: two periods of invoices (each with two charges
of two lines) bulk-loaded with the repository's own COPY loaders (`billing.db.bulk`), the earlier
period numbered by the ledger's `finalize_drafts`, a few drafts held. A viewer signs in through
the login form with httpx, then each page is fetched N times after a warm-up: the Review page
(first page, sorted, filtered, a later page), an invoice page (draft and finalized) and, for
comparison, the REST API's invoice. Figures (median and p95 in ms, against the targets) go to
bench/results/console.json.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from bench.support import (
    BIN,
    RESULTS,
    free_port,
    load_average,
    machine,
    throwaway_database,
    write_figures,
)
from billing.config import Settings
from billing.db.bulk import copy_rows, insert_returning_ids
from billing.db.engine import ledger
from billing.db.ledger import finalize_drafts
from billing.db.locks import write_transaction
from billing.db.tables import BillingRun, Invoice, InvoiceCharge, InvoiceLine, ReviewHold
from billing.finance.access import add_user
from billing.periods import BillingPeriod
from billing.states import InvoiceStatus, Role

PERIOD = BillingPeriod.parse("2026-10")
USER, PASSWORD = "bench-viewer", "bench console password"
MEDIAN_TARGET_MS, P95_TARGET_MS = 150.0, 400.0
INVOICE_COLUMNS = (
    *("run_id", "status", "org_id", "org_name", "contact_emails", "period", "currency"),
    *("rate_card_id", "rate_card_version", "rate_card_hash", "total", "issued_at"),
    "billing_address",
)
CHARGE_COLUMNS = (
    *("invoice_id", "position", "meter", "description", "unit", "quantity", "included"),
    *("billable", "pricing", "amount"),
)
LINE_COLUMNS = ("invoice_id", "meter", "api_key_id", "user_id", "quantity", "unit", "amount")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


# --------------------------------------------------------------------------- the ledger


def org_total(number: int, period: BillingPeriod) -> Decimal | None:
    """A synthetic org's total: 1% new in PERIOD, 1% gone from it, 5% swinging, 2% at zero."""
    base = Decimal(100 + number * 37 % 4_900) + Decimal(number % 100) / 100
    if period == PERIOD:
        if number % 100 == 1:
            return None  # gone
        if number % 20 == 3:
            return base * 3  # a swing
        return base + Decimal(number % 7 - 3)
    if number % 100 == 2:
        return None  # new in PERIOD
    return Decimal(0) if number % 50 == 4 else base


def _run(session: Session, period: BillingPeriod, now: datetime) -> int:
    run = BillingRun(
        period=str(period), status="succeeded", trigger="bench", started_at=now, upstream_url="-"
    )
    session.add(run)
    session.flush()
    assert run.id is not None
    return run.id


def store_invoices(session: Session, period: BillingPeriod, orgs: int, now: datetime) -> int:
    """A period's drafts with two charges of two lines each, loaded with COPY; how many."""
    run_id = _run(session, period, now)
    invoices, totals = [], []
    for number in range(1, orgs + 1):
        total = org_total(number, period)
        if total is None:
            continue
        org_id = f"org-{number:05d}"
        contact = "" if number % 40 == 5 else f"billing@{org_id}.example"
        currency = "EUR" if number % 10 == 6 else "USD"
        who = (org_id, f"Synthetic Org {number:05d}", contact)
        card = ("standard", "1", "0" * 64)
        draft = (run_id, InvoiceStatus.DRAFT.value, *who, str(period), currency, *card, total)
        invoices.append((*draft, now, f"{org_id} Street"))
        totals.append(total)
    ids = insert_returning_ids(session, Invoice, INVOICE_COLUMNS, invoices)
    charges, lines = [], []
    for invoice_id, total in zip(ids, totals, strict=True):
        compute = (total * Decimal("0.6")).quantize(Decimal("0.01"))
        for position, (meter, amount) in enumerate((("cpu", compute), ("memory", total - compute))):
            quantity = amount * 10
            described = (meter, f"{meter} hours", "hour")
            charges.append(
                (invoice_id, position, *described, quantity, Decimal(0), quantity, "0.1", amount)
            )
            half = (amount / 2).quantize(Decimal("0.01"))
            for key, share in (("key-a", half), ("key-b", amount - half)):
                lines.append((invoice_id, meter, key, "user-1", share * 10, "hour", share))
    copy_rows(session, InvoiceCharge, CHARGE_COLUMNS, charges)
    copy_rows(session, InvoiceLine, LINE_COLUMNS, lines)
    return len(ids)


def seed(settings: Settings, engine: Engine, orgs: int) -> dict[str, int]:
    """The previous period finalized, PERIOD drafted with every 200th draft held, a viewer."""
    now = datetime.now(UTC)
    with write_transaction(engine) as session:
        previous = store_invoices(session, PERIOD.previous(), orgs, now)
        finalized = finalize_drafts(session, PERIOD.previous(), now, now + timedelta(days=30))
        current = store_invoices(session, PERIOD, orgs, now)
        held = [f"org-{number:05d}" for number in range(7, orgs + 1, 200)]
        for org_id in held:
            session.add(
                ReviewHold(
                    org_id=org_id, period=str(PERIOD), reason="bench", held_by="bench", held_at=now
                )
            )
        session.commit()
    add_user(settings, "bench-admin", Role.ADMIN, PASSWORD, actor="bench")  # the first: an admin
    add_user(settings, USER, Role.VIEWER, PASSWORD, actor="bench")
    return {
        "previous_invoices": previous,
        "finalized": finalized.count,
        "invoices": current,
        "held": len(held),
    }


# --------------------------------------------------------------------------- the server


@contextmanager
def served(settings: Settings, folder: Path) -> Iterator[str]:
    """`billing serve` as its own process on a free loopback port; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "BILLING_DATABASE_URL": settings.database_url,
        "BILLING_OUTPUT_DIR": str(settings.output_dir),
        "BILLING_EMAIL_BACKEND": "file",
    }
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "billing"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/login", timeout=2)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    break
                time.sleep(0.05)
        else:
            raise SystemExit("billing serve did not answer in 30 s")
        if process.poll() is not None:
            raise SystemExit(f"billing serve ended: {(folder / 'serve.log').read_text()[-2000:]}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def signed_in(url: str) -> httpx.Client:
    """A client with a viewer's session, signed in through the login form."""
    client = httpx.Client(base_url=url, timeout=60)
    login = client.get("/login")
    found = CSRF.search(login.text)
    assert found, "no CSRF token on the login page"
    answer = client.post(
        "/login", data={"name": USER, "password": PASSWORD, "csrf_token": found.group(1)}
    )
    if answer.status_code != 303:
        raise SystemExit(f"signing in failed: {answer.status_code} {answer.text[:300]}")
    return client


# --------------------------------------------------------------------------- timing


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def time_page(
    client: httpx.Client,
    path: str,
    requests: int,
    warm_up: int = 3,
) -> dict[str, Any]:
    """GET `path` `requests` times after `warm_up` untimed ones; every answer must be 200."""
    for _ in range(warm_up):
        client.get(path).raise_for_status()
    times, size = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:300]}")
        size = len(answer.content)
    median, p95 = statistics.median(times), percentile(times, 0.95)
    return {
        "path": path,
        "requests": requests,
        "median_ms": round(median, 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(max(times), 1),
        "bytes": size,
        "meets_target": median < MEDIAN_TARGET_MS and p95 < P95_TARGET_MS,
    }


def refs(engine: Engine) -> tuple[str, str]:
    """A draft of PERIOD (its id) and a finalized invoice of the period before (its number)."""
    with Session(engine) as session:
        draft = session.execute(
            select(func.min(col(Invoice.id))).where(col(Invoice.period) == str(PERIOD))
        ).scalar_one()
        number = session.execute(
            select(func.min(col(Invoice.number))).where(
                col(Invoice.period) == str(PERIOD.previous())
            )
        ).scalar_one()
    return str(draft), str(number)


def pages(draft: str, number: str) -> dict[str, str]:
    review = f"/periods/{PERIOD}/review"
    return {
        "review: first page": review,
        "review: sorted by change %": f"{review}?sort=change_percent&order=desc",
        "review: filtered (swing, q)": f"{review}?flag=swing&q=org-0",
        "review: page 30 by name": f"{review}?sort=name&page=30",
        "invoice page: draft": f"/invoices/{draft}",
        "invoice page: finalized": f"/invoices/{number}",
    }


def check_totals(text: str, engine: Engine) -> None:
    """The Review page's footer holds the period's live totals (a sanity check of the seed)."""
    with Session(engine) as session:
        found = session.execute(
            select(col(Invoice.currency), func.sum(col(Invoice.total)))
            .where(col(Invoice.period) == str(PERIOD), col(Invoice.status) != InvoiceStatus.VOID)
            .group_by(col(Invoice.currency))
        ).all()
    shown = dict(re.findall(r'data-currency="([A-Z]{3})" data-amount="([-0-9.]+)"', text))
    expected = {str(currency): Decimal(total) for currency, total in found}
    if {currency: Decimal(amount) for currency, amount in shown.items()} != expected:
        raise SystemExit(f"the Review page's totals {shown} are not the ledger's {expected}")


def run(orgs: int, requests: int) -> dict[str, Any]:
    with TemporaryDirectory(prefix="bench-console-") as scratch, throwaway_database() as url:
        folder = Path(scratch)
        settings = Settings(
            _env_file=None,
            database_url=url,
            output_dir=folder / "statements",
            broker_url=None,
        )
        with ledger(settings, migrate=True) as engine:
            started = time.perf_counter()
            seeded = seed(settings, engine, orgs)
            seed_seconds = time.perf_counter() - started
            print(f"seeded {seeded} in {seed_seconds:.1f}s", flush=True)
            draft, number = refs(engine)
            with served(settings, folder) as base, closing(signed_in(base)) as client:
                check_totals(client.get(f"/periods/{PERIOD}/review").text, engine)
                timed = {
                    name: time_page(client, path, requests)
                    for name, path in pages(draft, number).items()
                }
    return {
        "orgs": orgs,
        "seed": {**seeded, "seconds": round(seed_seconds, 1)},
        "targets": {"median_ms": MEDIAN_TARGET_MS, "p95_ms": P95_TARGET_MS},
        "pages": timed,
        "load_average": load_average(),
        "machine": machine(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(figures: dict[str, Any]) -> None:
    print(f"\nconsole pages, {figures['orgs']:,} orgs, {figures['seed']['invoices']:,} invoices")
    print(f"{'page':36} {'median ms':>10} {'p95 ms':>8} {'KiB':>6}  target")
    for name, page in figures["pages"].items():
        verdict = "met" if page["meets_target"] else "MISSED"
        print(
            f"{name:36} {page['median_ms']:>10.1f} {page['p95_ms']:>8.1f} "
            f"{page['bytes'] / 1024:>6.0f}  {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=60)
    options = parser.parse_args()
    figures = run(options.orgs, options.requests)
    print_table(figures)
    write_figures(RESULTS, "console.json", figures)


if __name__ == "__main__":
    main()
