"""The period's focus.csv: every org's statement rows (FOCUS 1.2) under one header, streamed."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from billing.domain import Statement
from billing.errors import OutputError
from billing.statements.csv_files import STATEMENT_COLUMNS, neutralise, statement_rows
from billing.states import InvoiceStatus

FOCUS_VERSION = "1.2"
# The statement CSV's columns, then the two a void invoice or a replacement adds to its own CSV,
# here on every row (empty on the others) so the file has one header.
FOCUS_EXPORT_COLUMNS = (*STATEMENT_COLUMNS, "x_InvoiceStatus", "x_Replaces")


def _lines(rows: list[tuple[str, ...]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def export_cells(statement: Statement) -> tuple[str, str]:
    """x_InvoiceStatus (VOID or empty) and x_Replaces (the replaced invoice or empty)."""
    status = "VOID" if statement.status == InvoiceStatus.VOID else ""
    return (status, neutralise(statement.replaces))


class FocusExportWriter:
    """focus.csv of a period: each added statement's rows (the statement CSV's own rows, with
    x_InvoiceStatus and x_Replaces) appended to a work file at once, so memory stays flat in
    the number of orgs; `finish` moves the work file into place.

    It writes what it is given, in that order: the close feeds it the same live statements as
    summary.csv (void invoices and credit notes are not in it), so BilledCost sums per currency
    to summary.csv's totals. Use it as a context manager, so a run that stops before `finish`
    removes the work file.
    """

    def __init__(self, work_path: Path, *, issuer_name: str) -> None:
        self._work_path = work_path
        self._issuer_name = issuer_name
        self._finished = False
        self._stream: BinaryIO | None = None
        try:
            self._stream = open(work_path, "wb")  # noqa: SIM115
            self._stream.write(_lines([FOCUS_EXPORT_COLUMNS]))
        except OSError as error:
            self.close()
            raise OutputError(f"cannot write {work_path}: {error.strerror}") from None

    def __enter__(self) -> FocusExportWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def add(self, statement: Statement) -> None:
        """Append one statement's rows."""
        if self._finished or self._stream is None:
            raise RuntimeError("focus.csv is already written")
        extra = export_cells(statement)
        rows = [row + extra for row in statement_rows(statement, issuer_name=self._issuer_name)]
        try:
            self._stream.write(_lines(rows))
        except OSError as error:
            raise OutputError(f"cannot write {self._work_path}: {error}") from None

    def finish(self, target: Path | None = None) -> Path:
        """Close the work file and move it to `target` (None: leave it where it is, for a
        caller that renames its work folder's files itself); the file's path."""
        if self._finished or self._stream is None:
            raise RuntimeError("focus.csv is already written")
        self._finished = True
        try:
            self._stream.close()
            if target is None:
                return self._work_path
            os.replace(self._work_path, target)
        except OSError as error:
            self.close()
            raise OutputError(f"cannot write {target}: {error}") from None
        return target

    def close(self) -> None:
        """Close the work file, and remove it unless `finish` kept it."""
        if self._stream is not None:
            self._stream.close()
        if not self._finished:
            self._work_path.unlink(missing_ok=True)
