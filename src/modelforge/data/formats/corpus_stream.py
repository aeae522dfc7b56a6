"""A plain-text corpus read as a stream of text blocks, never whole: what a token file is built from.

The stream is exactly the text ``read_text_corpus(...).join()`` gives — documents in the same order, decoded with
the same encoding (a UTF-8 byte-order mark dropped), ``\\r\\n`` and ``\\r`` turned into ``\\n``, whitespace-only files
skipped, ``\\n\\n`` between documents — so a corpus tokenized from the stream has the ids of one tokenized in memory.
Only one block (``BLOCK_BYTES`` of a file) is held at a time.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from modelforge.core.errors import DataError
from modelforge.data.formats.text_corpus import check_encoding, read_text

BLOCK_BYTES = 1 << 20
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
SEPARATOR = "\n\n"  # between documents, as TextCorpus.join


def _open(path: Path) -> BinaryIO:
    opener = _OPENERS.get(path.suffix.lower())
    return opener(path, "rb") if opener else open(path, "rb")  # type: ignore[return-value]


def _decoded_blocks(path: Path, encoding: str) -> Iterator[str]:
    """The file's text in blocks, line endings normalised; a ``\\r`` ending a block waits for the next one."""
    codec = check_encoding(encoding)
    decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)()
    pending = ""
    try:
        with _open(path) as fh:
            while True:
                raw = fh.read(BLOCK_BYTES)
                text = pending + decoder.decode(raw, final=not raw)
                pending = "\r" if text.endswith("\r") and raw else ""
                text = text[:-1] if pending else text
                if text:
                    yield text.replace("\r\n", "\n").replace("\r", "\n")
                if not raw:
                    return
    except UnicodeDecodeError:
        read_text(path, encoding)  # the whole-file reader names the byte offset and the line of the bad byte
        raise
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:  # zlib: a corrupt gzip body
        raise DataError(f"{path}: cannot read the file ({exc}); check that it is not truncated or corrupt") from None


def _document(path: Path, encoding: str) -> Iterator[str]:
    """The file's blocks, or nothing when the file holds only whitespace (its leading whitespace waits until a
    non-whitespace character shows the file is not empty)."""
    held = ""
    blocks = _decoded_blocks(path, encoding)
    for block in blocks:
        held += block
        if held.strip():
            yield held
            yield from blocks
            return


def corpus_blocks(files: Iterable[Path], encoding: str = "utf-8", skipped: list[Path] | None = None
                  ) -> Iterator[str]:
    """The joined corpus as blocks of text; files holding only whitespace are appended to ``skipped``."""
    first = True
    for path in files:
        started = False
        for block in _document(path, encoding):
            if not started and not first:
                yield SEPARATOR
            started, first = True, False
            yield block
        if not started and skipped is not None:
            skipped.append(path)


def limited(blocks: Iterable[str], limit: int | None) -> Iterator[str]:
    """The first ``limit`` characters of the stream (all of it when ``limit`` is None)."""
    left = limit
    for block in blocks:
        if left is not None:
            block = block[:left]
            left -= len(block)
        if block:
            yield block
        if left == 0:
            return


def split_at(blocks: Iterable[str], ends: dict[str, int]) -> Iterator[tuple[str, str]]:
    """(split name, text) pieces: the first ``ends[first]`` characters belong to the first split, up to the next end
    to the next, and so on (``ends``: split name → character position where it ends, in order)."""
    names = iter(ends.items())
    name, end = next(names)
    position = 0
    for block in blocks:
        while block:
            take = block[: max(end - position, 0)]
            if take:
                yield name, take
                position += len(take)
                block = block[len(take):]
            if position >= end and block:
                try:
                    name, end = next(names)
                except StopIteration:
                    return


def count_characters(files: Iterable[Path], encoding: str = "utf-8", limit: int | None = None) -> tuple[int, list]:
    """Characters of the joined corpus (at most ``limit``) and the whitespace-only files skipped."""
    skipped: list[Path] = []
    total = sum(len(block) for block in limited(corpus_blocks(files, encoding, skipped), limit))
    return total, skipped
