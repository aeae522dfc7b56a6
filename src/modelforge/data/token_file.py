"""Memory-mapped token files: a text tokenized once into a flat array of ids on disk (nanoGPT's ``train.bin``) with a
small JSON sidecar, opened with ``np.memmap`` so that training reads only the windows it samples.

Layout, for a cache key ``K`` (a hash of the tokenizer and of the source files' sizes and modification times):
``K.tokens`` (ids, little-endian ``uint16`` when the vocabulary fits in 65,536 ids, else ``uint32``), ``K.json``
(format, dtype, token count, the splits as ``[start, end)`` token ranges, characters per split, the tokenizer's
sha256, the source files) and whatever the caller stores beside them (the tokenizer's JSON). Token files live next
to the data (``.modelforge-tokens/`` in the data's folder) or, when that folder is not writable, in the cache
folder. Both files are written to a temporary name and renamed; the sidecar is renamed last, so a file without its
sidecar (a killed run) is never trusted and is rebuilt. A table's texts (one id sequence per row) add an offsets
file: ``data/row_tokens.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelforge.core.atomic import atomic_write_json
from modelforge.data.cache import cache_dir

FORMAT = 1
FOLDER = ".modelforge-tokens"
# characters handed to the tokenizer's (multi-threaded) batch encoder at once: its encodings take ~60 bytes per
# character while they live, so this bounds the memory of encoding
BATCH_CHARS = 1 << 18
LONGEST_LINE = 4 * BATCH_CHARS  # a line longer than this is encoded in pieces, keeping memory bounded
_CHUNK = re.compile(r"[^\n]*(?:\n+|$)")  # a line with the newlines that follow it: the unit text is encoded in


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned type that holds every id."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def source_stats(files: Sequence[Path]) -> list[dict[str, Any]]:
    """What identifies the source files in a cache key: resolved path, size and modification time of each."""
    stats = []
    for path in files:
        info = path.stat()
        stats.append({"path": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns})
    return stats


def cache_key(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in (f"token-file-format-{FORMAT}", *parts):
        digest.update(part.encode("utf-8", errors="surrogatepass") + b"\0")
    return digest.hexdigest()[:24]


def token_folder(data_path: Path | None, fallback: str = "token_files") -> Path:
    """``.modelforge-tokens`` beside the data (in a data folder, or in a data file's folder), or the cache folder's
    ``fallback`` when there is no data path or its folder is not writable."""
    if data_path is not None:
        base = data_path if data_path.is_dir() else data_path.parent
        folder = base / FOLDER
        try:
            folder.mkdir(exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            pass  # a read-only data folder (a mounted dataset): fall back to the cache
    return cache_dir(fallback)


class TokenSpan:
    """``ids[start:end]`` of a token file, memory-mapped on first use — again in each DataLoader worker, since a
    pickled memory map would be copied whole. Indexing (a slice, an index array) reads only what it touches."""

    def __init__(self, path: Path, dtype: str, start: int, end: int):
        self.path, self.dtype, self.start, self.end = path, np.dtype(dtype), start, end
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = (np.zeros(0, self.dtype) if len(self) == 0 else np.memmap(
                self.path, dtype=self.dtype, mode="r", offset=self.start * self.dtype.itemsize, shape=(len(self),)))
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.array[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array, dtype=dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


@dataclass
class TokenFile:
    """An opened token file: ``meta`` is its sidecar; ``split(name)`` maps one split's ids."""

    path: Path
    meta: dict[str, Any]

    def split(self, name: str) -> TokenSpan:
        start, end = self.meta["splits"][name]
        return TokenSpan(self.path, self.meta["dtype"], start, end)


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Held while a token file in ``path``'s folder is checked and built: processes started together (torchrun's
    ranks) build it once — the first builds, the others wait and then find it finished."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / ".build.lock"
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        except Exception:
            _remove_if_only_the_lock(path.parent, lock)  # bad data found while building leaves no folder behind
            raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_if_only_the_lock(folder: Path, lock: Path) -> None:
    try:
        if [entry.name for entry in folder.iterdir()] == [lock.name]:
            lock.unlink()
            folder.rmdir()
    except OSError:
        pass  # another process is using the folder: leave it


def sidecar_of(path: Path) -> Path:
    return path.with_suffix(".json")


def open_token_file(path: Path) -> TokenFile | None:
    """The token file at ``path``, or None when it is missing, incomplete or of another format."""
    import json

    sidecar = sidecar_of(path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        expected = int(meta["tokens"]) * np.dtype(meta["dtype"]).itemsize
        if meta.get("format") != FORMAT or path.stat().st_size != expected:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return TokenFile(path, meta)


class ArrayWriter:
    """Appends a flat array of ``dtype`` to a temporary file beside ``path``; ``finish`` renames it into place."""

    def __init__(self, path: Path, dtype: np.dtype | str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.fh = os.fdopen(fd, "wb")

    def write(self, values: Any) -> None:
        array = np.asarray(values)
        self.fh.write(array.astype(self.dtype).tobytes())
        self.count += int(array.size)

    def finish(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class TokenWriter(ArrayWriter):
    """Appends ids (checked against the dtype's range); ``commit`` renames the file into place and writes the
    sidecar."""

    def __init__(self, path: Path, vocab_size: int):
        super().__init__(path, token_dtype(vocab_size))

    def write(self, ids: Sequence[int]) -> None:
        array = np.asarray(ids, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() >= np.iinfo(self.dtype).max + 1):
            raise ValueError(f"token id out of range for {self.dtype}")  # a tokenizer larger than it claims
        super().write(array)

    def commit(self, meta: dict[str, Any]) -> TokenFile:
        self.finish()
        full = {"format": FORMAT, "dtype": self.dtype.str, "tokens": self.count, **meta}
        atomic_write_json(sidecar_of(self.path), full)
        return TokenFile(self.path, full)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "characters") -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr while the block runs (silent off a terminal: stdout may carry a command's
    JSON); yields ``advance(amount)``. ``unit`` is "characters" (shown as a transfer) or "rows" (m of n)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    counted = [DownloadColumn(), TransferSpeedColumn()] if unit == "characters" else [MofNCompleteColumn()]
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), *counted, TimeRemainingColumn(), console=console,
                  transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=max(total, 1))
        yield lambda amount: bar.advance(task, amount)


def line_batches(pieces: Iterable[tuple[str, str]], batch_chars: int = BATCH_CHARS
                 ) -> Iterator[tuple[str, list[str], int]]:
    """(split, lines, characters) batches of about ``batch_chars`` from (split, text) pieces: each split's text cut
    into lines with their newlines, a line never crossing a split boundary — the chunks an in-memory
    ``_CHUNK.findall`` gives."""
    split, carry, batch, size = None, "", [], 0
    for name, text in pieces:
        if name != split:
            if carry:
                batch.append(carry)
            if batch:
                yield split, batch, sum(map(len, batch))
            split, carry, batch, size = name, "", [], 0
        lines = [chunk for chunk in _CHUNK.findall(carry + text) if chunk]
        carry = lines.pop() if lines else ""  # may continue in the next piece
        if len(carry) > LONGEST_LINE:
            lines.append(carry)
            carry = ""
        for line in lines:
            batch.append(line)
            size += len(line)
            if size >= batch_chars:
                yield split, batch, size
                batch, size = [], 0
    if carry:
        batch.append(carry)
    if batch:
        yield split, batch, sum(map(len, batch))


def encode_to_file(tokenizer: Any, pieces: Iterable[tuple[str, str]], writer: TokenWriter, total_chars: int,
                   description: str = "tokenizing") -> tuple[dict[str, list[int]], float]:
    """Encode (split, text) pieces into ``writer`` with the tokenizer's batch encoder (threads over the lines of a
    batch), showing a progress bar on a terminal. Returns each split's ``[start, end)`` token range and the
    seconds it took."""
    import time
    from itertools import chain

    ranges: dict[str, list[int]] = {}
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # the same ids, without offsets
    started = time.perf_counter()
    with progress_bar(description, total_chars) as advance:
        for split, lines, size in line_batches(pieces):
            start = ranges.setdefault(split, [writer.count, writer.count])[0]
            encodings = encode(lines)
            writer.write(np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64))
            ranges[split] = [start, writer.count]
            advance(size)
    return ranges, time.perf_counter() - started
