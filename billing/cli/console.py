"""What every command shares: the two consoles, literal printing of upstream data, the
--format outputs (table, JSON, CSV), progress lines and settings loading."""

from __future__ import annotations

import csv
import json
import logging
import sys
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from billing.errors import ConfigError

if TYPE_CHECKING:
    from billing.config import Settings

# Written to a pipe or a file, lines are not wrapped and a table is as wide as its cells:
# nothing is cut or folded.
PIPE_WIDTH = 100_000


def _width_for(stream: object) -> int | None:
    isatty = getattr(stream, "isatty", None)
    return None if callable(isatty) and isatty() else PIPE_WIDTH


out = Console(emoji=False, highlight=False, width=_width_for(sys.stdout))
err = Console(stderr=True, emoji=False, highlight=False, width=_width_for(sys.stderr))


def shown(text: object) -> str:
    """The text with every control, format or separator character written as its escape
    (`\\x1b`, `\\n`, `\\u202e`), so no escape sequence from the data reaches the terminal."""
    return "".join(
        char.encode("unicode_escape").decode("ascii") if _hidden(char) else char
        for char in str(text)
    )


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def literal(text: object) -> str:
    """Data (an id, a name, an address, a reason) for a markup string: shown as stored, never
    read as console markup, control characters escaped."""
    return escape(shown(text))


def cell(value: object) -> Text:
    """A table cell that prints its data literally (a Text is never read as markup)."""
    if isinstance(value, Text):
        return value
    return Text("-" if value is None else shown(value))


def data_table(title: str, columns: Sequence[str], *, right: Collection[str] = ()) -> Table:
    """A table whose cells wrap on a narrow terminal instead of being cut with an ellipsis.
    `title` is markup: pass data in it through `literal`."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def add_row(table: Table, *values: object) -> None:
    table.add_row(*(cell(value) for value in values))


def progress(text: str) -> None:
    """A dim progress line on stderr, so stdout stays the result; printed literally."""
    err.print(Text(shown(text), style="dim"))


class LiteralLogFormatter(logging.Formatter):
    """Log lines (ours and the libraries') with the data's control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(shown(line) for line in super().format(record).split("\n"))


def configure_logging() -> None:
    """Warnings and errors on stderr, one line each, never a raw escape sequence."""
    handler = logging.StreamHandler()
    handler.setFormatter(LiteralLogFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def error_line(message: str) -> None:
    """The one line an expected failure prints on stderr, its text literal."""
    err.print(Text.assemble(("error:", "red"), " ", shown(message)), soft_wrap=True)


class OutputFormat(StrEnum):
    """How a listing command prints its result."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        metavar="table|json|csv",
        case_sensitive=False,
        help="table for people; json or csv (every row, amounts as exact decimal strings) "
        "for programs.",
    ),
]


def wait_option(help_text: str) -> Any:
    """The `--wait SECONDS` option of a command that takes a period's lock: how long it waits
    for the run holding the period (each command says what it waits for)."""
    return typer.Option("--wait", min=0, metavar="SECONDS", help=help_text)


WaitOption = Annotated[
    float,
    wait_option("Wait this long for another run of the period to finish (default: do not wait)."),
]

Record = Mapping[str, object]


def plain(value: object) -> object:
    """A JSON value: amounts as exact decimal strings (never floats), moments in ISO 8601."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def print_json(data: object) -> None:
    """JSON on stdout, every non-ASCII and control character escaped."""
    sys.stdout.write(json.dumps(plain(data), indent=2) + "\n")
    sys.stdout.flush()


_FORMULA_PREFIXES = ("=", "+", "-", "@")


def csv_cell(value: object) -> str:
    """A CSV cell: amounts exact, text with controls escaped and a leading apostrophe where a
    spreadsheet would run it as a formula."""
    if value is None:
        return ""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return format(value, "f") if isinstance(value, Decimal) else str(value)
    text = shown(plain(value))
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def print_csv(columns: Sequence[str], records: Iterable[Record]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow([csv_cell(record.get(column)) for column in columns])
    sys.stdout.flush()


def emit_records(
    output: OutputFormat,
    columns: Sequence[str],
    records: Sequence[Record],
    *,
    title: str,
    table_columns: Sequence[str] | None = None,
    shown_as: Mapping[str, Callable[[Record], object]] | None = None,
    right: Collection[str] = (),
) -> None:
    """Print every record: a table (`shown_as` formats a column for people), JSON or CSV."""
    if output is OutputFormat.JSON:
        print_json([{column: record.get(column) for column in columns} for record in records])
        return
    if output is OutputFormat.CSV:
        print_csv(columns, records)
        return
    formats = shown_as or {}
    visible = table_columns or columns
    table = data_table(title, visible, right=right)
    for record in records:
        add_row(
            table,
            *(
                formats[column](record) if column in formats else record.get(column)
                for column in visible
            ),
        )
    out.print(table)


def money_column(locale: str, column: str = "total") -> Callable[[Record], object]:
    """A table cell of `emit_records(shown_as=...)`: the record's `column` as money in the
    record's currency (its "currency" field), for people."""
    from billing.statements import formatting  # imported here: `billing --help` does not need it

    return lambda record: formatting.money(
        record[column],  # type: ignore[arg-type]
        str(record["currency"]),
        locale,
    )


def emit_document(
    output: OutputFormat,
    document: Mapping[str, object],
    columns: Sequence[str],
    records: Iterable[Record],
) -> bool:
    """A `show` command's output for programs: CSV is its lines (`records`), JSON the whole
    `document`. False for a table, which the command prints itself."""
    if output is OutputFormat.CSV:
        print_csv(columns, records)
        return True
    if output is OutputFormat.JSON:
        print_json(document)
        return True
    return False


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value becomes a one-line ConfigError."""
    from pydantic import ValidationError

    from billing.config import Settings  # imported here: `billing --help` does not need it

    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"setting {name}: {first['msg']}") from None
    return settings.model_copy(update=overrides) if overrides else settings
