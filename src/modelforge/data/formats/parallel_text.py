"""Parallel text for translation and summarization: a TSV of ``source<TAB>target``, a JSONL file of one
``{"source": ..., "target": ...}`` object per line (any two field names), two line-aligned files (WMT: ``train.en``,
``train.es``), or a WMT source and reference .sgm pair (``<seg id="N">`` segments matched by document and id).

Alignment is by line, so any doubt about it is an error: two files with different line counts fail naming both
files and both counts, and a TSV row without exactly the expected number of tab-separated fields fails with its
line number. Blank lines in a TSV, and pairs where one side is empty, are skipped and counted (logger
``modelforge.data``). TSV fields are not quoted (IANA TSV), so quotes in sentences are kept as they are.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from modelforge.core.errors import DataError
from modelforge.data.formats.text_corpus import check_encoding, read_text

log = logging.getLogger("modelforge.data")


@dataclass
class ParallelText:
    """Aligned sentence pairs in file order, with the 1-based line each came from."""

    sources: list[str]
    targets: list[str]
    paths: tuple[Path, ...]
    lines: list[int] = field(default_factory=list)
    skipped_blank: int = 0
    skipped_empty_side: int = 0

    def __len__(self) -> int:
        return len(self.sources)

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.sources, self.targets, strict=True))

    def subset(self, indices: list[int]) -> ParallelText:
        return ParallelText(
            sources=[self.sources[i] for i in indices],
            targets=[self.targets[i] for i in indices],
            paths=self.paths,
            lines=[self.lines[i] for i in indices] if self.lines else [],
        )


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return lines


def read_parallel_tsv(
    path: str | Path,
    source_column: int = 0,
    target_column: int = 1,
    num_columns: int = 2,
    encoding: str = "utf-8",
    skip_header: bool = False,
) -> ParallelText:
    """Read a TSV whose rows hold exactly ``num_columns`` tab-separated fields (3 for the Tatoeba/ManyThings files,
    whose third column is the attribution); the pair is taken from ``source_column`` and ``target_column``."""
    path = Path(path)
    if not (0 <= source_column < num_columns and 0 <= target_column < num_columns) or source_column == target_column:
        raise DataError(
            f"{path}: source_column={source_column} and target_column={target_column} must be two different "
            f"columns among 0..{num_columns - 1}"
        )
    check_encoding(encoding)
    rows: list[tuple[int, str, str]] = []
    blank = 0
    for number, line in enumerate(_split_lines(read_text(path, encoding)), start=1):
        if skip_header and number == 1:
            continue
        if not line.strip():
            blank += 1
            continue
        fields = line.split("\t")
        if len(fields) != num_columns:
            raise DataError(
                f"{path}: line {number} has {len(fields)} tab-separated field(s), expected {num_columns} "
                f"(source<TAB>target); fix that line or set num_columns"
            )
        rows.append((number, fields[source_column], fields[target_column]))
    return _collect(rows, (path,), blank)


def read_parallel_files(source_path: str | Path, target_path: str | Path, encoding: str = "utf-8") -> ParallelText:
    """Read two line-aligned files: line ``i`` of the source translates to line ``i`` of the target."""
    source_path, target_path = Path(source_path), Path(target_path)
    check_encoding(encoding)
    source_lines = _split_lines(read_text(source_path, encoding))
    target_lines = _split_lines(read_text(target_path, encoding))
    if len(source_lines) != len(target_lines):
        raise DataError(
            f"parallel files are not line-aligned: {source_path} has {len(source_lines)} lines but {target_path} "
            f"has {len(target_lines)}; every source line needs exactly one target line"
        )
    rows = [(number, source, target)
            for number, (source, target) in enumerate(zip(source_lines, target_lines, strict=True), start=1)]
    return _collect(rows, (source_path, target_path))


def read_parallel(
    path: str | Path,
    source_lang: str | None = None,
    target_lang: str | None = None,
    encoding: str = "utf-8",
    source_field: str | None = None,
    target_field: str | None = None,
) -> ParallelText:
    """A TSV file (``path``), a JSONL file (``*.jsonl``: one object per line, see ``read_parallel_jsonl``), or, when
    both languages are given, the WMT pair ``{path}.{source_lang}`` / ``{path}.{target_lang}``
    (``read_parallel("data/train", "en", "es")`` reads ``data/train.en`` and ``data/train.es``) or, where those do
    not exist, WMT's .sgm source and reference (``wmt_sgm_paths``)."""
    if (source_lang is None) != (target_lang is None):
        raise DataError("give both source_lang and target_lang (for train.en/train.es files) or neither (for a TSV)")
    if source_lang is None:
        if str(path).lower().endswith(".jsonl"):
            return read_parallel_jsonl(path, source_field, target_field, encoding=encoding)
        return read_parallel_tsv(path, encoding=encoding)
    source, target = parallel_paths(path, source_lang, target_lang)
    if source != Path(f"{path}.{source_lang}"):  # the WMT .sgm pair
        return read_parallel_sgm(source, target, encoding=encoding)
    return read_parallel_files(source, target, encoding=encoding)


def _collect(rows: list[tuple[int, str, str]], paths: tuple[Path, ...], blank: int = 0) -> ParallelText:
    """The pairs of ``rows`` (line number, source, target), stripped; a pair with an empty side is skipped and
    counted, and no pair at all is an error."""
    sources, targets, numbers, empty_side = [], [], [], []
    for number, source, target in rows:
        source, target = source.strip(), target.strip()
        if not source or not target:
            empty_side.append(number)
            continue
        sources.append(source)
        targets.append(target)
        numbers.append(number)
    return _finish(ParallelText(sources, targets, paths, numbers, blank, len(empty_side)), empty_side)


def _finish(result: ParallelText, empty_side: list[int]) -> ParallelText:
    where = " and ".join(str(p) for p in result.paths)
    if empty_side:
        shown = ", ".join(str(n) for n in empty_side[:5]) + (", ..." if len(empty_side) > 5 else "")
        log.warning("%s: skipped %d pair(s) with an empty side (lines %s)", where, len(empty_side), shown)
    if result.skipped_blank:
        log.warning("%s: skipped %d blank line(s)", where, result.skipped_blank)
    if not result.sources:
        raise DataError(f"{where}: no sentence pairs (the file is empty or every pair has an empty side)")
    return result


def read_parallel_jsonl(
    path: str | Path, source_field: str | None = None, target_field: str | None = None, encoding: str = "utf-8"
) -> ParallelText:
    """Read one JSON object per line holding the pair in two string fields. Without ``source_field`` and
    ``target_field`` the names come from the first object, which must then have exactly two string fields (source
    first, as written); anything else is ambiguous and fails listing the fields."""
    path = Path(path)
    check_encoding(encoding)
    rows: list[tuple[int, str, str]] = []
    blank = 0
    for number, line in enumerate(_split_lines(read_text(path, encoding)), start=1):
        if not line.strip():
            blank += 1
            continue
        row = _json_object(path, number, line)
        if source_field is None or target_field is None:
            source_field, target_field = _infer_fields(path, number, row, source_field, target_field)
        rows.append((number, *(_string_field(path, number, row, name) for name in (source_field, target_field))))
    return _collect(rows, (path,), blank)


def _json_object(path: Path, number: int, line: str) -> dict:
    import json

    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {number} is not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object with two fields")
    return row


def _infer_fields(path: Path, number: int, row: dict, source: str | None, target: str | None) -> tuple[str, str]:
    strings = [name for name, value in row.items() if isinstance(value, str)]
    if source is None and target is None and len(strings) == 2:
        return strings[0], strings[1]
    rest = [name for name in strings if name not in (source, target)]
    if source is None and target is not None and len(rest) == 1:
        return rest[0], target
    if target is None and source is not None and len(rest) == 1:
        return source, rest[0]
    raise DataError(
        f"{path}: line {number} has string fields {strings}; cannot tell source from target, set "
        f"data.source_field and data.target_field"
    )


def _string_field(path: Path, number: int, row: dict, name: str) -> str:
    if name not in row:
        raise DataError(f"{path}: line {number} has no field {name!r} (fields: {sorted(row)})")
    if not isinstance(row[name], str):
        raise DataError(f"{path}: line {number} field {name!r} is a {type(row[name]).__name__}, expected a string")
    return row[name].strip()


_DOC = re.compile(r"<doc\b[^>]*\bdocid=\"([^\"]*)\"", re.IGNORECASE)
_SEG = re.compile(r"<seg\b[^>]*\bid=\"?([^\">\s]+)\"?[^>]*>(.*?)</seg>", re.IGNORECASE)


def read_sgm_segments(path: str | Path, encoding: str = "utf-8") -> dict[tuple[str, str], tuple[str, int]]:
    """The ``<seg id="N">…</seg>`` segments of a WMT .sgm file: (document id, segment id) → (text, line)."""
    path = Path(path)
    check_encoding(encoding)
    segments: dict[tuple[str, str], tuple[str, int]] = {}
    doc = ""
    for number, line in enumerate(_split_lines(read_text(path, encoding)), start=1):
        if match := _DOC.search(line):
            doc = match.group(1)
        for seg in _SEG.finditer(line):
            key = (doc, seg.group(1))
            if key in segments:
                raise DataError(f"{path}: line {number} repeats segment id {key[1]} of document {doc!r}")
            segments[key] = (html.unescape(seg.group(2)).strip(), number)
        if "<seg" in line.lower() and not _SEG.search(line):
            raise DataError(f"{path}: line {number} opens a <seg> without id=\"N\" and a closing </seg> on that line")
    if not segments:
        raise DataError(f"{path}: no <seg id=\"N\">…</seg> segments (is this a WMT .sgm file?)")
    return segments


def read_parallel_sgm(source_path: str | Path, reference_path: str | Path, encoding: str = "utf-8") -> ParallelText:
    """Pair a WMT source .sgm with its reference .sgm by document and segment id (source order); a segment on one
    side only is an error naming the file and line."""
    source_path, reference_path = Path(source_path), Path(reference_path)
    source, reference = read_sgm_segments(source_path, encoding), read_sgm_segments(reference_path, encoding)
    for key, (_, number) in source.items():
        if key not in reference:
            raise DataError(f"{source_path}: line {number} segment {key[1]} of document {key[0]!r} has no "
                            f"reference in {reference_path}")
    for key, (_, number) in reference.items():
        if key not in source:
            raise DataError(f"{reference_path}: line {number} segment {key[1]} of document {key[0]!r} has no "
                            f"source in {source_path}")
    rows = [(number, text, reference[key][0]) for key, (text, number) in source.items()]
    return _collect(rows, (source_path, reference_path))


def parallel_paths(path: str | Path, source_lang: str, target_lang: str) -> tuple[Path, Path]:
    """The two files ``read_parallel(path, source_lang, target_lang)`` reads: ``{path}.{src}`` / ``{path}.{tgt}``,
    or, where those do not exist, the WMT .sgm pair (``wmt_sgm_paths``)."""
    plain = Path(f"{path}.{source_lang}")
    sgm = None if plain.is_file() else wmt_sgm_paths(path, source_lang, target_lang)
    return sgm or (plain, Path(f"{path}.{target_lang}"))


def wmt_sgm_paths(prefix: str | Path, source_lang: str, target_lang: str) -> tuple[Path, Path] | None:
    """WMT's test-set naming, ``{prefix}-src.{src}.sgm`` / ``{prefix}-ref.{tgt}.sgm``, or ``{prefix}.{src}.sgm`` /
    ``{prefix}.{tgt}.sgm``: the pair that exists, else None."""
    for source, target in ((f"{prefix}-src.{source_lang}.sgm", f"{prefix}-ref.{target_lang}.sgm"),
                           (f"{prefix}.{source_lang}.sgm", f"{prefix}.{target_lang}.sgm")):
        if Path(source).is_file() and Path(target).is_file():
            return Path(source), Path(target)
    return None
