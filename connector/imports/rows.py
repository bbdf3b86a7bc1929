"""Reading an import file: CSV (UTF-8, with or without BOM; comma or semicolon) or xlsx
(the first sheet, read in openpyxl's read_only mode so a 100,000-row workbook is streamed,
not loaded whole). The first row names the columns; names are matched case-insensitively,
with a few spellings each (`COLUMNS`). Values come out as text, or as the date an xlsx cell
holds; numbers an xlsx cell holds come out as the shortest text of the stored number (a
spreadsheet keeps them as binary doubles, so "150.1" typed in a cell is read back as 150.1).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

# Canonical column -> the header spellings accepted for it.
COLUMNS: dict[str, tuple[str, ...]] = {
    "contact_id": ("contact_id", "contact", "contact id", "id"),
    "phone": ("phone", "telephone", "tel"),
    "email": ("email", "e-mail", "mail"),
    "balance": ("balance", "opening_balance", "opening balance", "points"),
    "expires": ("expires", "expires_at", "expiry", "expiry_date", "expires on"),
    "tier": ("tier", "level"),
    "birthday": ("birthday", "birthdate", "date_of_birth"),
    "card_number": ("card_number", "card", "card number"),
    "referrer": ("referrer", "referred_by", "referral_code", "referrer_code"),
}
_BY_SPELLING = {spelling: name for name, spellings in COLUMNS.items() for spelling in spellings}


class ImportFileError(ValueError):
    """The file cannot be read as an import at all (bad usage, exit 2)."""


Value = str | date | None


@dataclass(frozen=True)
class RawRow:
    line: int  # as a spreadsheet numbers it: the header is line 1
    values: dict[str, Value]

    def text(self, column: str) -> str:
        value = self.values.get(column)
        return "" if value is None else str(value).strip()


def read_rows(path: Path) -> tuple[list[str], Iterator[RawRow]]:
    """The columns found (canonical names) and the rows, streamed. ImportFileError when the
    file is missing, of another kind, or its header names neither a contact nor a balance."""
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        header, rows = _csv_rows(path)
    elif suffix == ".xlsx":
        header, rows = _xlsx_rows(path)
    else:
        raise ImportFileError(f"{path}: expected a .csv or .xlsx file")
    columns = _columns(path, header)
    named = [name for name in columns if name is not None]
    if "balance" not in named:
        raise ImportFileError(f"{path}: no balance column (header: {', '.join(header)})")
    if not {"contact_id", "phone", "email"} & set(named):
        raise ImportFileError(f"{path}: no contact_id, phone or email column to find the "
                              "contact by")

    read = _text if suffix == ".csv" else _cell  # CSV cells are text already

    def iterate() -> Iterator[RawRow]:
        for line, cells in rows:
            values = {name: read(cell) for name, cell in zip(columns, cells, strict=False)
                      if name is not None}
            if any(value not in (None, "") for value in values.values()):
                yield RawRow(line, values)

    return named, iterate()


def _columns(path: Path, header: list[str]) -> list[str | None]:
    columns: list[str | None] = []
    for raw in header:
        name = _BY_SPELLING.get(str(raw or "").strip().lower().replace("\ufeff", ""))
        if name is not None and name in columns:
            raise ImportFileError(f"{path}: column {name!r} appears twice in the header")
        columns.append(name)
    return columns


def _csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(4096)
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
        reader = csv.reader(handle, dialect)
        header = next(reader, None)
    except UnicodeDecodeError:
        raise ImportFileError(f"{path}: not UTF-8 text (save the CSV as UTF-8)") from None
    if header is None:
        handle.close()
        raise ImportFileError(f"{path}: empty file")

    def iterate() -> Iterator[tuple[int, list[str]]]:
        with handle:
            try:
                for cells in reader:
                    yield reader.line_num, cells
            except UnicodeDecodeError:
                raise ImportFileError(f"{path}: not UTF-8 text after line {reader.line_num} "
                                      "(save the CSV as UTF-8)") from None

    return header, iterate()


def _xlsx_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, list[Any]]]]:
    from openpyxl import load_workbook  # only imports that read xlsx pay for loading it
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, OSError, KeyError, ValueError) as exc:
        raise ImportFileError(f"{path}: not a readable xlsx workbook ({exc})") from None
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, None)
    if header is None:
        book.close()
        raise ImportFileError(f"{path}: the first sheet is empty")

    def iterate() -> Iterator[tuple[int, list[Any]]]:
        try:
            for line, cells in enumerate(rows, start=2):
                yield line, list(cells)
        finally:
            book.close()

    return ["" if cell is None else str(cell) for cell in header], iterate()


def _text(cell: str) -> Value:
    return cell.strip()


def _cell(cell: Any) -> Value:
    if cell is None:
        return None
    if isinstance(cell, datetime):
        return cell.date()
    if isinstance(cell, date):
        return cell
    if isinstance(cell, bool):
        return str(cell)
    if isinstance(cell, float):
        # The shortest text that reads back as the stored double: what the cell showed.
        return str(int(cell)) if cell.is_integer() else repr(cell)
    return str(cell).strip()
