"""A multi-row INSERT at the driver's speed on SQLite, for an import's 100,000 rows.

SQLAlchemy's executemany runs every column of every row through its type's bind processor
(UTCDateTime to naive UTC and on to SQLite's text, JSON to text) and builds the statement's
parameters row by row. An import's rows share most of their values (the same `now` in five
columns, a few expiry dates), so on SQLite each distinct value is processed once here, by
the same processors, and the driver gets plain tuples. PostgreSQL takes SQLAlchemy's own
executemany (psycopg pipelines it, and adapts the values itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    if dialect.name != "sqlite":
        session.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    # Column by column: one comprehension per column instead of a call per value.
    by_column: list[list[Any]] = []
    for name in names:
        values = [row[name] for row in rows]
        process: Callable[[Any], Any] | None = table.c[name].type.dialect_impl(
            dialect).bind_processor(dialect)
        if process is not None:
            values = _processed(values, process)
        by_column.append(values)
    params = list(zip(*by_column, strict=True))
    columns = ", ".join(dialect.identifier_preparer.quote(name) for name in names)
    marks = ", ".join("?" for _ in names)
    connection.exec_driver_sql(
        f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({columns}) "
        f"VALUES ({marks})", params)


def _processed(values: list[Any], process: Callable[[Any], Any]) -> list[Any]:
    try:
        once = {value: process(value) for value in set(values) if value is not None}
    except TypeError:  # unhashable (JSON): each value on its own
        return [None if value is None else process(value) for value in values]
    once[None] = None
    return [once[value] for value in values]
