"""The period's reports in one pass over its statements, in memory flat in the number of orgs."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from billing.domain import OrgTotal, Statement
from billing.errors import OutputError
from billing.money import format_minor
from billing.statements.allocation import (
    ALLOCATION_COLUMNS,
    AllocationRow,
    CostCentreMap,
    OrgRef,
    allocation_cells,
    bucket_order,
    org_allocation,
    record,
    share_rows,
)
from billing.statements.csv_files import SUMMARY_COLUMNS, neutralise, summary_row
from billing.statements.files import work_prefix
from billing.statements.focus import FocusExportWriter
from billing.statements.render_keys import forget_key, record_key, report_key, stored_pdf
from billing.statements.reports import (
    CentreTotal,
    ChangeSelection,
    OrgChange,
    ReportTally,
    RunFacts,
    org_changes,
    report_html,
    report_pdf,
)
from billing.statements.shared_costs import SharingBook

CHANGES_COLUMNS = (
    "org_id",
    "org_name",
    "currency",
    "previous_total",
    "current_total",
    "change",
    "change_percent",
    "flag",
)

REPORT_FILES = ("summary.csv", "allocation.csv", "changes.csv", "focus.csv", "summary.pdf")


def csv_lines(rows: Iterable[Sequence[str]]) -> bytes:
    """Rows as `to_csv` writes them (UTF-8, CRLF line ends), without a header."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _amount(number: Decimal | None, currency: str) -> str:
    return "" if number is None else format_minor(number, currency)


def change_cells(change: OrgChange) -> tuple[str, ...]:
    """One row of changes.csv (CHANGES_COLUMNS): amounts at their currency's minor unit (the
    previous total at its own currency's when the currency changed), the percentage to one
    decimal; empty cells where there is no number."""
    return (
        neutralise(change.org_id),
        neutralise(change.org_name),
        neutralise(change.currency),
        _amount(change.previous, change.previous_currency or change.currency),
        _amount(change.current, change.currency),
        _amount(change.change, change.currency),
        "" if change.change_percent is None else format(change.change_percent, "f"),
        change.flag,
    )


class PeriodReportWriter:
    """summary.csv, allocation.csv, changes.csv, focus.csv and summary.pdf of a period, fed one
    statement at a time (in org order, each org once) and written at `finish`.

    Per org it keeps an `OrgTotal` and, per cost centre the org's lines reach, where its
    allocation rows lie in a scratch file; summary.csv rows go straight to a temporary file.
    The rest is small: totals by currency, meter and cost centre, per currency at most
    `max_org_rows` (or `top_orgs`) invoices for the PDF's tables, and for the shared rules
    (allocation.SharingBook) each centre's direct cost and each source org's sum and invoice
    number; the shares are written to the scratch file at `finish`. Work files live in a hidden
    folder inside `folder` and the reports replace the old ones by renames, so nothing
    half-written is left behind.
    Use it as a context manager, so a run that stops before `finish` removes its work files.
    """

    def __init__(
        self,
        folder: Path,
        period: str,
        previous_period: str,
        centres: CostCentreMap,
        *,
        issuer_name: str,
        swing_threshold_percent: Decimal,
        top_orgs: int,
        max_org_rows: int,
        templates_dir: Path | None,
        locale: str,
    ) -> None:
        self._folder = folder
        self._period = period
        self._previous_period = previous_period
        self._centres = centres
        self._issuer_name = issuer_name
        self._swing = swing_threshold_percent
        self._max_org_rows = max_org_rows
        self._templates_dir = templates_dir
        self._locale = locale
        self._tally = ReportTally(max_org_rows, top_orgs)
        self._totals: list[OrgTotal] = []
        self._in_order = True
        self._texts: dict[str, str] = {}  # one copy of each currency code
        # (currency, cost centre) -> (org ordinal, offset, length) per org in the scratch file
        self._buckets: dict[tuple[str, str], array[int]] = {}
        # shared rules: the sums they need, the source orgs' invoice numbers, and where the
        # shares of each (currency, cost centre) lie in the scratch file (offset, length)
        self._book = SharingBook(centres.shared)
        self._invoices: dict[int, str] = {}
        self._shares: dict[tuple[str, str], array[int]] = {}
        self._centre_totals: dict[tuple[str, str], Decimal] = {}
        self._scratch_size = 0
        self._finished = False
        try:
            self._work = Path(tempfile.mkdtemp(dir=folder, prefix=work_prefix("reports-")))
            self._summary: BinaryIO = open(self._work / "summary.csv", "wb")  # noqa: SIM115
            self._scratch: BinaryIO = open(self._work / "allocation.rows", "w+b")  # noqa: SIM115
            self._summary.write(csv_lines([SUMMARY_COLUMNS]))
            self._focus = FocusExportWriter(self._work / "focus.csv", issuer_name=issuer_name)
        except OSError as error:
            self.close()
            raise OutputError(f"cannot write the reports in {folder}: {error.strerror}") from None

    def __enter__(self) -> PeriodReportWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, statement: Statement) -> None:
        """Take one org's statement; nothing of it is kept but a few facts."""
        if self._finished:
            raise RuntimeError("the period reports are already written")
        if self._totals and statement.org_id <= self._totals[-1].org_id:
            if statement.org_id == self._totals[-1].org_id:
                raise ValueError(f"org {statement.org_id} was added twice to the period reports")
            self._in_order = False
        ordinal = len(self._totals)
        currency = self._texts.setdefault(statement.currency, statement.currency)
        self._totals.append(
            OrgTotal(statement.org_id, statement.org_name, currency, statement.total)
        )
        by_centre: dict[str, list[AllocationRow]] = {}
        rows = org_allocation(statement, self._centres)
        for row in rows:
            by_centre.setdefault(row.cost_centre, []).append(row)
        record(self._book, ordinal, rows)
        if any(row.allocated_from for row in rows):
            self._invoices[ordinal] = statement.invoice_number
        try:
            self._summary.write(csv_lines([summary_row(statement)]))
            self._focus.add(statement)
            for centre, rows in by_centre.items():
                chunk = csv_lines(allocation_cells(row) for row in rows)
                self._scratch.write(chunk)
                key = (currency, centre)
                self._buckets.setdefault(key, array("q")).extend(
                    (ordinal, self._scratch_size, len(chunk))
                )
                self._scratch_size += len(chunk)
                self._centre_totals[key] = self._centre_totals.get(key, Decimal(0)) + sum(
                    (row.billed_cost for row in rows), Decimal(0)
                )
        except OSError as error:
            raise OutputError(f"cannot write the reports in {self._folder}: {error}") from None
        self._tally.add(statement)

    def finish(self, previous: Iterable[OrgTotal], facts: RunFacts | None) -> list[Path]:
        """Write the five reports beside the statements; their paths in REPORT_FILES order.

        `previous` holds the previous period's totals (any order) for month over month.
        """
        if self._finished:
            raise RuntimeError("the period reports are already written")
        self._finished = True
        try:
            ranks = self._org_ranks()
            self._summary.close()
            self._focus.finish()
            self._write_shares()
            self._write_allocation(ranks)
            changes = self._write_changes(previous)
            report = self._tally.report(
                self._period,
                self._previous_period,
                changes,
                facts,
                [CentreTotal(*key, self._centre_totals[key]) for key in self._bucket_keys()],
                issuer_name=self._issuer_name,
                swing_threshold_percent=self._swing,
            )
            # summary.pdf is printed only when its HTML (or what prints it) changed.
            html = report_html(report, self._templates_dir, self._locale)
            key = report_key(html, self._templates_dir, self._locale)
            pdf = stored_pdf(self._folder, "summary", key)
            if pdf is None:
                pdf = report_pdf(report, self._templates_dir, self._locale)
            (self._work / "summary.pdf").write_bytes(pdf)
            forget_key(self._folder, "summary")
            targets = [self._folder / name for name in REPORT_FILES]
            for name, target in zip(REPORT_FILES, targets, strict=True):
                os.replace(self._work / name, target)
            record_key(self._folder, "summary", key, pdf)
        except OSError as error:
            raise OutputError(f"cannot write the reports in {self._folder}: {error}") from None
        finally:
            self.close()
        return targets

    def close(self) -> None:
        """Remove the work files (after `finish`, or instead of it)."""
        for name in ("_summary", "_scratch", "_focus"):
            stream = getattr(self, name, None)
            if stream is not None:
                stream.close()
        work = getattr(self, "_work", None)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def _org_ranks(self) -> array[int] | None:
        """Each org's place in org order when they came in another order (None: in order);
        an org that came twice is an error."""
        if self._in_order:
            return None
        order = sorted(range(len(self._totals)), key=lambda ordinal: self._totals[ordinal].org_id)
        ranks = array("q", bytes(8 * len(order)))
        for rank, ordinal in enumerate(order):
            if rank and self._totals[order[rank - 1]].org_id == self._totals[ordinal].org_id:
                org_id = self._totals[ordinal].org_id
                raise ValueError(f"org {org_id} was added twice to the period reports")
            ranks[ordinal] = rank
        return ranks

    def _bucket_keys(self) -> list[tuple[str, str]]:
        return sorted(
            self._buckets.keys() | self._shares.keys(), key=lambda key: bucket_order(*key)
        )

    def _org(self, ordinal: int) -> OrgRef:
        total = self._totals[ordinal]
        return OrgRef(total.org_id, total.org_name, self._invoices[ordinal])

    def _write_shares(self) -> None:
        """The shared rules' rows, appended to the scratch file one target block at a time."""
        self._scratch.seek(0, os.SEEK_END)
        for block in self._book.blocks(lambda ordinal: self._totals[ordinal].org_id):
            rows = list(share_rows(block, self._org))
            if not rows:
                continue
            key = (self._texts.setdefault(block.currency, block.currency), block.centre)
            chunk = csv_lines(allocation_cells(row) for row in rows)
            self._scratch.write(chunk)
            self._shares.setdefault(key, array("q")).extend((self._scratch_size, len(chunk)))
            self._scratch_size += len(chunk)
            self._centre_totals[key] = self._centre_totals.get(key, Decimal(0)) + sum(
                (row.billed_cost for row in rows), Decimal(0)
            )

    def _write_allocation(self, ranks: array[int] | None) -> None:
        """allocation.csv: each (currency, cost centre) block in order, its orgs in org order,
        then its shares in rule order."""
        self._scratch.flush()
        with open(self._work / "allocation.csv", "wb") as target:
            target.write(csv_lines([ALLOCATION_COLUMNS]))
            for key in self._bucket_keys():
                index = self._buckets.get(key, array("q"))
                chunks = [
                    (index[at], index[at + 1], index[at + 2]) for at in range(0, len(index), 3)
                ]
                if ranks is not None:
                    chunks.sort(key=lambda chunk: ranks[chunk[0]])
                shares = self._shares.get(key, array("q"))
                places = [(offset, length) for _ordinal, offset, length in chunks] + [
                    (shares[at], shares[at + 1]) for at in range(0, len(shares), 2)
                ]
                for offset, length in places:
                    self._scratch.seek(offset)
                    target.write(self._scratch.read(length))

    def _write_changes(self, previous: Iterable[OrgTotal]) -> ChangeSelection:
        """changes.csv, every org in org order; returns the rows summary.pdf shows."""
        selection = ChangeSelection(self._max_org_rows)
        with open(self._work / "changes.csv", "wb") as target:
            target.write(csv_lines([CHANGES_COLUMNS]))
            for change in org_changes(self._totals, previous, self._swing):
                target.write(csv_lines([change_cells(change)]))
                selection.add(change)
        return selection
