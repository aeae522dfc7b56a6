"""Which columns of a text table hold the text and the label, when the user does not say.

A classification table usually has one column of running text (many distinct, multi-word values) and one column of
few distinct values (the label); other columns (ids, dates, scores) are ignored. When exactly one column of each
kind is found, they are used; when it is ambiguous, the error lists every column with what it looks like, so the
user can name the right ones with ``data.text_column`` / ``data.label_column``.

A table is judged on its first ``PROFILE_ROWS`` rows (a record source's too), read as a stream: inferring the
columns never reads a large file whole. A column that looks different further down (a label column whose later rows
bring it past 100 distinct values) is judged by its head; name the columns to settle it.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from modelforge.core.errors import DataError
from modelforge.data.formats.text_corpus import check_file
from modelforge.data.formats.text_table import (
    TableFormat,
    TableRow,
    open_lines,
    reading_errors,
    stream_table_rows,
    table_format,
)

PROFILE_ROWS = 2000  # rows looked at to infer which columns hold the text and the label

# Names that settle a tie between look-alike columns, most specific first.
_TEXT_NAMES = ("text", "sentence", "review", "body", "content", "document", "message", "comment")
_LABEL_NAMES = ("label", "labels", "class", "category", "target", "sentiment", "topic", "y")


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    distinct: int
    mean_words: float

    def looks_like_text(self, rows: int) -> bool:
        return self.mean_words >= 3 and self.distinct >= 2 and not self.looks_like_label(rows)

    def looks_like_label(self, rows: int) -> bool:
        return 2 <= self.distinct <= max(2, min(100, rows // 5)) and self.mean_words <= 4

    def describe(self, rows: int) -> str:
        kind = ("text-like" if self.looks_like_text(rows) else "label-like" if self.looks_like_label(rows)
                else "neither")
        return f"{self.name!r} ({self.distinct} distinct, {self.mean_words:.1f} words on average: {kind})"


def table_columns(path: Path, format: TableFormat | None = None, encoding: str = "utf-8") -> list[str]:
    """The column names: the CSV/TSV header, or the keys of the first JSON object (read from the file's head)."""
    path, fmt = check_file(path), table_format(path, format)
    with reading_errors(path, encoding), open_lines(path, encoding) as lines:
        return _header(lines, fmt)


def _header(lines: Iterable[str], fmt: TableFormat) -> list[str]:
    if fmt == "jsonl":
        for line in lines:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # reading the rows reports it with the line number
                return list(record) if isinstance(record, dict) else []
        return []
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    for header in csv.reader(lines, delimiter="\t" if fmt == "tsv" else ",", quoting=quoting):
        if any(h.strip() for h in header):
            return [h.strip() for h in header]
    return []


def profile_columns(path: Path, format: TableFormat | None = None, encoding: str = "utf-8",
                    limit: int = PROFILE_ROWS) -> tuple[list[ColumnProfile], int]:
    """Each column's profile over the table's first ``limit`` rows, and how many rows that was."""
    columns = table_columns(path, format, encoding)
    if not columns:
        raise DataError(f"{path}: no columns found; expected a header row (CSV/TSV) or JSON objects")
    with closing(stream_table_rows(path, columns, format, encoding)) as stream:  # closes the file when cut short
        rows: list[TableRow] = list(itertools.islice(stream, limit))
    profiles = []
    for column in columns:
        values = [row.values[column].strip() for row in rows]
        words = sum(len(v.split()) for v in values) / max(len(values), 1)
        profiles.append(ColumnProfile(column, len(set(values) - {""}), words))
    return profiles, len(rows)


def check_inferred_label(where: str, column: str, distinct: int, rows: int) -> None:
    """A label column inferred from the first ``PROFILE_ROWS`` rows of a longer table (of ``rows`` usable rows,
    ``distinct`` labels) must still look like one over all of it: a date column shows few values in its head and
    hundreds over the table."""
    if rows > PROFILE_ROWS and not ColumnProfile(column, distinct, 0.0).looks_like_label(rows):
        raise DataError(f"{where}: column {column!r} looked like the label in the first {PROFILE_ROWS} rows, but the "
                        f"whole table has {distinct} distinct values in it; set data.label_column and "
                        "data.text_column to the columns to use")


def _one_of(candidates: list[ColumnProfile], names: tuple[str, ...]) -> ColumnProfile | None:
    if len(candidates) == 1:
        return candidates[0]
    for name in names:  # a tie: a conventional name settles it
        for profile in candidates:
            if profile.name.lower() == name:
                return profile
    return None


def infer_columns(path: Path, text_column: str | None, label_column: str | None,
                  format: TableFormat | None = None, encoding: str = "utf-8") -> tuple[str, str]:
    """(text column, label column): the given names, or the one text-like / label-like column of the table."""
    if text_column and label_column:
        return text_column, label_column
    profiles, rows = profile_columns(path, format, encoding)
    return pick_columns(profiles, rows, text_column, label_column, str(path))


def pick_columns(profiles: list[ColumnProfile], rows: int, text_column: str | None, label_column: str | None,
                 where: str) -> tuple[str, str]:
    """The given names, or the one text-like / label-like column among ``profiles`` (of ``rows`` rows)."""
    if text_column is None:
        texts = [p for p in profiles if p.looks_like_text(rows) and p.name != label_column]
        chosen = _one_of(texts, _TEXT_NAMES)
        text_column = chosen.name if chosen else None
    if label_column is None:
        labels = [p for p in profiles if p.looks_like_label(rows) and p.name != text_column]
        chosen = _one_of(labels, _LABEL_NAMES)
        label_column = chosen.name if chosen else None
    if text_column is None or label_column is None:
        missing = " and ".join(k for k, v in (("data.text_column", text_column), ("data.label_column", label_column))
                               if v is None)
        listed = "; ".join(p.describe(rows) for p in profiles)
        raise DataError(f"{where}: cannot tell which column to use; set {missing}. Columns: {listed}")
    return text_column, label_column
