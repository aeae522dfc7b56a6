"""Parallel text for translation: a TSV of ``source<TAB>target``, or two line-aligned files (WMT: ``train.en``,
``train.es``).

Alignment is by line, so any doubt about it is an error: two files with different line counts fail naming both
files and both counts, and a TSV row without exactly the expected number of tab-separated fields fails with its
line number. Blank lines in a TSV, and pairs where one side is empty, are skipped and counted (logger
``modelforge.data``). TSV fields are not quoted (IANA TSV), so quotes in sentences are kept as they are.
"""

from __future__ import annotations

import logging
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
    lines = _split_lines(read_text(path, encoding))
    sources, targets, numbers = [], [], []
    blank, empty_side = 0, []
    for number, line in enumerate(lines, start=1):
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
        source, target = fields[source_column].strip(), fields[target_column].strip()
        if not source or not target:
            empty_side.append(number)
            continue
        sources.append(source)
        targets.append(target)
        numbers.append(number)
    return _finish(ParallelText(sources, targets, (path,), numbers, blank, len(empty_side)), empty_side)


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
    sources, targets, numbers, empty_side = [], [], [], []
    for number, (source, target) in enumerate(zip(source_lines, target_lines, strict=True), start=1):
        source, target = source.strip(), target.strip()
        if not source or not target:
            empty_side.append(number)
            continue
        sources.append(source)
        targets.append(target)
        numbers.append(number)
    result = ParallelText(sources, targets, (source_path, target_path), numbers, 0, len(empty_side))
    return _finish(result, empty_side)


def read_parallel(
    path: str | Path,
    source_lang: str | None = None,
    target_lang: str | None = None,
    encoding: str = "utf-8",
) -> ParallelText:
    """A TSV file (``path``), or the WMT pair ``{path}.{source_lang}`` / ``{path}.{target_lang}`` when both
    languages are given (``read_parallel("data/train", "en", "es")`` reads ``data/train.en`` and ``data/train.es``)."""
    if (source_lang is None) != (target_lang is None):
        raise DataError("give both source_lang and target_lang (for train.en/train.es files) or neither (for a TSV)")
    if source_lang is None:
        return read_parallel_tsv(path, encoding=encoding)
    return read_parallel_files(f"{path}.{source_lang}", f"{path}.{target_lang}", encoding=encoding)


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
