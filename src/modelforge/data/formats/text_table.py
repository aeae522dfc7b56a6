"""Text classification tables: CSV, TSV or JSON Lines with a text column and a label column.

Column names are configurable; labels are any strings (numbers in JSONL become their text form) and any number of
classes is fine. Files may be gzip/bz2/xz-compressed (``reviews.csv.bz2``). TSV follows the IANA definition: no
quoting, a field simply cannot hold a tab; CSV uses standard double-quote quoting, so texts may hold commas and
newlines.

Every problem surfaces while the file is read, never deep in training:

- a missing column, a malformed row, an undecodable byte, an empty file → ``DataError`` naming the file (and the
  line, or the columns present);
- an empty text or label → the row is skipped, counted in the result and logged (logger ``modelforge.data``);
- a label outside ``known_labels`` (e.g. a test label the training set never had) → ``DataError`` by default, or a
  counted skip with ``unknown_labels="skip"``.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import difflib
import gzip
import io
import itertools
import json
import logging
import lzma
import sys
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelforge.core.errors import DataError
from modelforge.data.formats.text_corpus import (
    check_encoding,
    check_file,
    decode_text,
    read_bytes,
    undecodable,
    unreadable,
)

log = logging.getLogger("modelforge.data")

TableFormat = Literal["csv", "tsv", "jsonl"]
_SUFFIX_FORMATS: dict[str, TableFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz"}
_STREAM_OPENERS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

# Reviews or articles longer than the csv module's default 128 KiB field limit are legitimate; raise it (process-wide,
# but only ever upwards).
csv.field_size_limit(max(csv.field_size_limit(), min(sys.maxsize, 2**31 - 1)))


@dataclass
class TableRow:
    line: int  # 1-based line where the row starts in the (decompressed) file
    values: dict[str, str]


@dataclass
class TextTable:
    """Texts and their labels in file order, the sorted label set, and what was skipped (counted warnings)."""

    texts: list[str]
    labels: list[str] | None
    label_names: list[str]
    path: Path | None = None
    lines: list[int] = field(default_factory=list)
    skipped_empty_text: int = 0
    skipped_empty_label: int = 0
    skipped_unknown_label: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    def label_ids(self, label_names: Sequence[str] | None = None) -> list[int]:
        """Labels as integer ids into ``label_names`` (default: this table's own sorted label set)."""
        if self.labels is None:
            raise DataError(f"{self.path}: table was read without a label column; set label_column to get labels")
        names = list(label_names if label_names is not None else self.label_names)
        index = {name: i for i, name in enumerate(names)}
        missing = sorted(set(self.labels) - index.keys())
        if missing:
            raise DataError(f"{self.path}: labels {missing[:5]} are not among the known labels {names[:20]}")
        return [index[label] for label in self.labels]

    def subset(self, indices: Sequence[int]) -> TextTable:
        """Rows at ``indices`` (e.g. one split), keeping the full label set so ids stay comparable across splits."""
        return TextTable(
            texts=[self.texts[i] for i in indices],
            labels=None if self.labels is None else [self.labels[i] for i in indices],
            label_names=list(self.label_names),
            path=self.path,
            lines=[self.lines[i] for i in indices] if self.lines else [],
        )


def table_format(path: str | Path, format: TableFormat | None = None) -> TableFormat:
    """The table format: given explicitly, or from the suffix (ignoring a compression suffix)."""
    if format is not None:
        if format not in ("csv", "tsv", "jsonl"):
            raise DataError(f"unknown table format {format!r}; use one of csv, tsv, jsonl")
        return format
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    raise DataError(
        f"{path}: cannot tell the table format from the file name; "
        f"use a .csv, .tsv or .jsonl suffix or set format to csv, tsv or jsonl"
    )


def _missing_column_error(path: Path, column: str, present: Sequence[str], where: str = "") -> DataError:
    hint = difflib.get_close_matches(column, list(present), n=1)
    guess = f" (did you mean {hint[0]!r}?)" if hint else ""
    shown = ", ".join(repr(c) for c in present) or "none"
    return DataError(f"{path}{where}: no column {column!r}{guess}; columns present: {shown}")


def _csv_rows(lines: Iterable[str], path: Path, columns: Sequence[str], delimiter: str) -> Iterator[TableRow]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)  # tolerate blank lines before the header
        if header is None:
            raise DataError(f"{path}: file is empty; expected a header row naming the columns, then data rows")
        header = [h.strip() for h in header]
        positions = {}
        for column in columns:
            if column not in header:
                raise _missing_column_error(path, column, header)
            positions[column] = header.index(column)
        previous_end = reader.line_num
        for fields in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != len(header):
                raise DataError(
                    f"{path}: line {start} has {len(fields)} fields but the header has {len(header)}; "
                    + (
                        "a text holding a tab breaks TSV, use CSV or JSONL"
                        if delimiter == "\t"
                        else "quote fields that contain commas or newlines"
                    )
                )
            yield TableRow(start, {c: fields[p] for c, p in positions.items()})
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc}); check the quoting there") from None


def _scalar_text(value: object) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def _jsonl_rows(lines: Iterable[str], path: Path, columns: Sequence[str]) -> Iterator[TableRow]:
    seen_any = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        seen_any = True
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(record).__name__}, expected an object per line")
        values = {}
        for column in columns:
            if column not in record:
                raise _missing_column_error(path, column, list(record), where=f" line {number}")
            value = _scalar_text(record[column])
            if value is None:
                raise DataError(
                    f"{path}: line {number}: field {column!r} is a {type(record[column]).__name__}, expected text"
                )
            values[column] = value
        yield TableRow(number, values)
    if not seen_any:
        raise DataError(f"{path}: file is empty; expected one JSON object per line")


def read_table_rows(
    path: str | Path,
    columns: Sequence[str],
    format: TableFormat | None = None,
    encoding: str = "utf-8",
) -> list[TableRow]:
    """The requested columns of every data row, as text, with the line each row starts on."""
    path = Path(path)
    fmt = table_format(path, format)
    check_encoding(encoding)
    text = decode_text(read_bytes(path), path, encoding)
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected {'JSON lines' if fmt == 'jsonl' else 'a header and rows'}")
    rows = list(_rows_of(io.StringIO(text, newline=""), path, columns, fmt))
    if not rows:
        raise DataError(f"{path}: has a header but no data rows")
    return rows


def _rows_of(lines: Iterable[str], path: Path, columns: Sequence[str], fmt: TableFormat) -> Iterator[TableRow]:
    if fmt == "jsonl":
        return _jsonl_rows(lines, path, columns)
    return _csv_rows(lines, path, columns, "," if fmt == "csv" else "\t")


def open_lines(path: Path, encoding: str) -> Any:
    """The (decompressed) file as text lines, decoded as ``decode_text`` does: newline=None turns \\r\\n and \\r
    into \\n, utf-8-sig drops a byte-order mark."""
    codec = check_encoding(encoding)
    opener = _STREAM_OPENERS.get(path.suffix.lower(), open)
    return opener(path, "rt", encoding="utf-8-sig" if codec == "utf-8" else codec, newline=None)


def stream_text_rows(path: str | Path, text_column: str, label_column: str, format: TableFormat | None = None,
                     encoding: str = "utf-8") -> Iterator[tuple[str, str]]:
    """The (text, label) rows ``read_text_table`` keeps, in order, read line by line from the (decompressed)
    file instead of decoding it whole: for a file already read once (its problems were reported then)."""
    path = Path(path)
    fmt = table_format(path, format)
    with reading_errors(path, encoding), open_lines(path, encoding) as lines:  # the file may have changed since
        for row in _rows_of(lines, path, [text_column, label_column], fmt):
            text, label = row.values[text_column].strip(), row.values[label_column].strip()
            if text and label:
                yield text, label


def stream_table_rows(path: str | Path, columns: Sequence[str], format: TableFormat | None = None,
                      encoding: str = "utf-8") -> Iterator[TableRow]:
    """``read_table_rows``'s rows, with its one-line errors, read line by line rather than decoded whole (so a
    problem is raised when the stream reaches it)."""
    path = check_file(path)
    fmt = table_format(path, format)
    with reading_errors(path, encoding), open_lines(path, encoding) as lines:
        head = []
        for line in lines:  # the lines up to the first that is not blank: none means an empty file
            head.append(line)
            if line.strip():
                break
        else:
            raise DataError(f"{path}: file is empty; expected "
                            f"{'JSON lines' if fmt == 'jsonl' else 'a header and rows'}")
        any_row = False
        for row in _rows_of(itertools.chain(head, lines), path, columns, fmt):
            any_row = True
            yield row
        if not any_row:
            raise DataError(f"{path}: has a header but no data rows")


@contextmanager
def reading_errors(path: Path, encoding: str) -> Iterator[None]:
    """A text stream's decoding and decompression failures as ``decode_text``'s and ``read_bytes``'s errors."""
    try:
        yield
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:  # zlib: a corrupt gzip body
        raise unreadable(path, exc) from None


def _decode_error(path: Path, encoding: str) -> DataError:
    """``decode_text``'s error for the file's first undecodable byte, found by decoding its bytes again in chunks
    (the text stream does not say where it failed)."""
    codec = check_encoding(encoding)
    decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)()
    end = newlines = 0
    with _STREAM_OPENERS.get(path.suffix.lower(), open)(path, "rb") as raw:
        while True:
            chunk = raw.read(1 << 20)
            end, newlines = end + len(chunk), newlines + chunk.count(b"\n")
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:  # exc.object: the bytes decoded, ending where this chunk ends
                rest = exc.object[exc.start:]
                return undecodable(path, encoding, end - len(rest), newlines - rest.count(b"\n") + 1, rest[:1])
            if not chunk:
                return DataError(f"{path}: is not valid {encoding}; pass the file's real encoding")


def checked_text_rows(path: str | Path, text_column: str, label_column: str, format: TableFormat | None = None,
                      encoding: str = "utf-8", known_labels: Collection[str] | None = None
                      ) -> Iterator[tuple[str, str]]:
    """The (text, label) rows ``read_text_table`` keeps, with its checks, warnings and errors, streamed: the
    first pass over a table whose rows are not held in memory."""
    path = Path(path)
    known = set(known_labels) if known_labels is not None else None
    rows = stream_table_rows(path, [text_column, label_column], format, encoding)
    for text, label, _ in _kept_rows(rows, path, text_column, label_column, known, "error", {}):
        yield text, label or ""


def _kept_rows(rows: Iterable[TableRow], path: Path, text_column: str, label_column: str | None,
               known: set[str] | None, unknown_labels: str, skipped: dict[str, list[int]]
               ) -> Iterator[tuple[str, str | None, int]]:
    """(text, label, line) of the usable ``rows``; the skipped rows' lines are put in ``skipped`` and logged at
    the end; no usable row at all is an error."""
    skipped.update(text=[], label=[], unknown=[])
    kept = 0
    for row in rows:
        text = row.values[text_column].strip()
        label = row.values[label_column].strip() if label_column else None
        if not text:
            skipped["text"].append(row.line)
        elif label == "":
            skipped["label"].append(row.line)
        elif label is not None and known is not None and label not in known:
            if unknown_labels == "error":
                raise DataError(
                    f"{path}: line {row.line}: label {label!r} does not occur in the training data "
                    f"(known: {sorted(known)[:20]}); fix the label or set unknown_labels='skip'"
                )
            skipped["unknown"].append(row.line)
        else:
            kept += 1
            yield text, label, row.line
    _log_skips(path, skipped["text"], "empty text")
    _log_skips(path, skipped["label"], f"empty label in column {label_column!r}")
    _log_skips(path, skipped["unknown"], "label not in the training labels")
    if not kept:
        raise DataError(f"{path}: no usable rows (every row has an empty text or label); check text_column")


def read_text_table(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    format: TableFormat | None = None,
    encoding: str = "utf-8",
    known_labels: Collection[str] | None = None,
    unknown_labels: Literal["error", "skip"] = "error",
) -> TextTable:
    """Read a classification table. ``label_column=None`` reads texts only (files to predict on).

    ``known_labels`` (the training set's labels, when reading validation or test data) makes any other label an
    error, or a counted skip with ``unknown_labels="skip"``. Leading/trailing whitespace of texts and labels is
    dropped.
    """
    if unknown_labels not in ("error", "skip"):
        raise DataError(f"unknown_labels must be 'error' or 'skip', got {unknown_labels!r}")
    path = Path(path)
    columns = [text_column] + ([label_column] if label_column else [])
    known = set(known_labels) if known_labels is not None else None
    table = TextTable(texts=[], labels=[] if label_column else None, label_names=[], path=path)
    skipped: dict[str, list[int]] = {}
    rows = read_table_rows(path, columns, format, encoding)
    for text, label, line in _kept_rows(rows, path, text_column, label_column, known, unknown_labels, skipped):
        table.texts.append(text)
        table.lines.append(line)
        if table.labels is not None and label is not None:
            table.labels.append(label)
    table.label_names = sorted(set(table.labels or []))
    table.skipped_empty_text, table.skipped_empty_label = len(skipped["text"]), len(skipped["label"])
    table.skipped_unknown_label = len(skipped["unknown"])
    return table


def _log_skips(path: Path, lines: list[int], reason: str) -> None:
    if lines:
        shown = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
        log.warning("%s: skipped %d row(s) with %s (lines %s)", path, len(lines), reason, shown)
