"""Bulk loading: COPY FROM STDIN on PostgreSQL, one Core executemany elsewhere, same rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Dialect, Table, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel

from billing.errors import StorageError

# Rows per executemany on the fallback path: bounds the parameter lists held at once.
FALLBACK_BATCH_ROWS = 5_000

_NEW_IDS = text(
    "SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :count)"
)


def upsert_insert(session: Session, table: Any) -> Any:
    """An INSERT of this database's dialect, which has on_conflict_do_nothing/do_update."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def copy_rows(
    session: Session,
    model: type[SQLModel],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Load `rows` (tuples in `columns` order) into `model`'s table inside the session's
    transaction: PostgreSQL COPY FROM STDIN, else Core executemany in batches.

    Values go through the columns' own bind processing (ExactDecimal refuses floats on both
    paths); database errors come out as SQLAlchemy's (IntegrityError, OperationalError, ...)."""
    table = _table(model)
    connection = _connection(session)
    if connection.dialect.name != "postgresql":
        statement = insert(table)
        batches = iter(rows)
        while batch := list(islice(batches, FALLBACK_BATCH_ROWS)):
            connection.execute(statement, [dict(zip(columns, row, strict=True)) for row in batch])
        return
    processed = _bind_processed(table, columns, connection.dialect)
    if processed:
        rows = _processed(rows, processed)
    copy = sql.SQL("COPY {table} ({columns}) FROM STDIN").format(
        table=sql.Identifier(*filter(None, (table.schema, table.name))),
        columns=sql.SQL(", ").join(sql.Identifier(name) for name in columns),
    )
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.cursor() as cursor, cursor.copy(copy) as loader:
            for row in rows:
                loader.write_row(row)
    except psycopg.errors.ProgramLimitExceeded as error:
        raise StorageError(
            f"a value is too long for PostgreSQL to index in {table.name} "
            f"({str(error).strip().splitlines()[0]}): an id of several thousand bytes; "
            "nothing was stored, report the id upstream"
        ) from None
    except psycopg.Error as error:
        raise DBAPIError.instance(copy.as_string(driver), None, error, psycopg.Error) from error


def insert_returning_ids(
    session: Session,
    model: type[SQLModel],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> list[int]:
    """Insert `rows` into `model`'s table, whose primary key `id` is a serial, and return their
    new ids in row order: on PostgreSQL the ids are drawn from the table's sequence first and
    the rows loaded with COPY; elsewhere one INSERT ... RETURNING."""
    if not rows:
        return []
    table = _table(model)
    connection = _connection(session)
    if connection.dialect.name != "postgresql":
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        values = [dict(zip(columns, row, strict=True)) for row in rows]
        return [int(identity) for identity in connection.execute(statement, values).scalars()]
    found = connection.execute(_NEW_IDS, {"table": table.name, "count": len(rows)}).scalars()
    ids = [int(identity) for identity in found]
    copy_rows(
        session,
        model,
        ("id", *columns),
        ((identity, *row) for identity, row in zip(ids, rows, strict=True)),
    )
    return ids


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def _connection(session: Session) -> Connection:
    """The session's connection, after the ORM objects still pending (a parent row, say)."""
    session.flush()
    return session.connection()


def _bind_processed(
    table: Table, columns: Sequence[str], dialect: Dialect
) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, processor) of the columns whose type converts values before binding."""
    found: list[tuple[int, Callable[[Any], Any]]] = []
    for position, name in enumerate(columns):
        processor = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            found.append((position, processor))
    return found


def _processed(
    rows: Iterable[Sequence[Any]], processed: list[tuple[int, Callable[[Any], Any]]]
) -> Iterator[Sequence[Any]]:
    """The rows with their values bound; a row is copied only when a processor changed a value
    (ExactDecimal on PostgreSQL only checks the type and hands the value back)."""
    for row in rows:
        changed: list[Any] | None = None
        for position, processor in processed:
            value = row[position]
            bound = processor(value)
            if bound is not value:
                if changed is None:
                    changed = list(row)
                changed[position] = bound
        yield row if changed is None else changed
