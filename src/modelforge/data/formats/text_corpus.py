"""Plain-text corpora for language models and embeddings: one ``.txt`` file, a list of files, or a directory.

Files are read in a fixed order (a directory's matching files sorted by relative path), decoded with a named
encoding, and their line endings normalised to ``\\n``, so the same folder gives the same corpus on every machine.
Undecodable bytes are an error that names the file, the byte offset and the line, not a crash in the tokenizer.

``decode_text`` and ``read_bytes`` are shared by the other text formats (tables, parallel text).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import logging
import lzma
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modelforge.core.errors import DataError
from modelforge.data.token_file import FOLDER as TOKEN_FOLDER

log = logging.getLogger("modelforge.data")

_DECOMPRESSORS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, transparently decompressed when it ends in .gz, .bz2 or .xz."""
    path = check_file(path)
    try:
        data = path.read_bytes()
        decompress = _DECOMPRESSORS.get(path.suffix.lower())
        return decompress(data) if decompress else data
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:  # zlib: a corrupt gzip body
        raise unreadable(path, exc) from None


def check_file(path: str | Path) -> Path:
    """``path``, once it is known to be a file (else the one-line error saying what it is)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    return path


def unreadable(path: str | Path, exc: Exception) -> DataError:
    """The error for a file whose bytes (or decompression) fail."""
    return DataError(f"{path}: cannot read the file ({exc}); check that it is not truncated or corrupt")


def undecodable(path: str | Path, encoding: str, start: int, line: int, byte: bytes) -> DataError:
    """The error for the first byte at ``start`` (on ``line``) that ``encoding`` cannot decode."""
    return DataError(f"{path}: byte {start} (line {line}) is not valid {encoding} ({byte!r}); "
                     f"pass the file's real encoding, e.g. encoding='latin-1' or 'cp1252'")


def check_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(
            f"unknown text encoding {encoding!r}; use a Python codec name such as utf-8, latin-1 or cp1252"
        ) from None


def decode_text(data: bytes, path: str | Path, encoding: str = "utf-8") -> str:
    """Decode ``data`` read from ``path``; a UTF-8 byte-order mark is dropped and line endings become ``\\n``."""
    codec = check_encoding(encoding)
    if codec == "utf-8":
        codec = "utf-8-sig"  # spreadsheets often write a BOM, which would otherwise glue onto the first column name
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise undecodable(path, encoding, exc.start, line, data[exc.start : exc.start + 1]) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """One text file, decompressed if needed, decoded, with ``\\n`` line endings."""
    return decode_text(read_bytes(path), path, encoding)


@dataclass
class TextCorpus:
    """Documents in reading order, with the file each came from."""

    documents: list[str]
    paths: list[Path]
    skipped_empty: int = 0
    skipped_paths: list[Path] = field(default_factory=list)

    def join(self, separator: str = "\n\n") -> str:
        """All documents as one string (what a character or BPE language model trains on)."""
        return separator.join(self.documents)

    def __len__(self) -> int:
        return len(self.documents)


def corpus_files(source: str | Path | Sequence[str | Path], pattern: str = "*.txt") -> list[Path]:
    """Expand a file, a directory (recursively, files matching ``pattern``, sorted) or a list of those."""
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise DataError("no corpus files given; pass a .txt file, a list of files or a directory")
    files: list[Path] = []
    for item in sources:
        path = Path(item)
        if path.is_dir():
            found = sorted(  # never the token files modelforge keeps beside the data
                (p for p in path.rglob(pattern) if p.is_file() and TOKEN_FOLDER not in p.relative_to(path).parts),
                key=lambda p, root=path: p.relative_to(root).as_posix(),
            )
            if not found:
                raise DataError(f"{path}: no files matching {pattern!r} in this directory; add files or set pattern")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: corpus file or directory not found; check the path")
    return files


def read_text_corpus(
    source: str | Path | Sequence[str | Path], encoding: str = "utf-8", pattern: str = "*.txt"
) -> TextCorpus:
    """Read a plain-text corpus. Empty (or whitespace-only) files are skipped with a counted warning."""
    check_encoding(encoding)
    documents, paths, skipped = [], [], []
    for path in corpus_files(source, pattern):
        text = read_text(path, encoding)
        if not text.strip():
            skipped.append(path)
            continue
        documents.append(text)
        paths.append(path)
    if skipped:
        log.warning("skipped %d empty corpus file(s), first: %s", len(skipped), skipped[0])
    if not documents:
        raise DataError(f"corpus {source}: every file is empty; nothing to train on")
    return TextCorpus(documents, paths, skipped_empty=len(skipped), skipped_paths=skipped)
