"""Row token files: texts (one id sequence per row) tokenized once into a memory-mapped token file.

Beside the flat ids of ``K.tokens`` (``data/token_file.py``: uint16/uint32, sidecar ``K.json``, atomic renames,
``build_lock``) a row file has ``K.rows``: little-endian int64 offsets, row ``r`` being ``ids[offsets[r]:
offsets[r + 1]]`` — one array for all columns, each column (a classifier's split; a translator's ``train/source``,
``train/target``, …) a ``[start, end)`` range of rows in the sidecar with its widest row, its number of truncated
texts and its mean length. ``RowView`` reads one column (padded ids and lengths of any rows, by numpy indexing on
the maps); ``TokenRows`` is a classifier's split as the in-memory padded tensor gave it: item ``i`` is (ids padded
to the split's widest row, length, label), and ``get_batch`` gathers a batch with one index operation.

With ``keep_texts`` the raw texts of every column are stored too (for a task whose metrics read texts): their UTF-8
bytes in ``K.texts`` and little-endian int64 byte offsets in ``K.text_rows`` — the same layout, row ``r`` being
``bytes[offsets[r]:offsets[r + 1]]``, each column a row range under ``texts`` in the sidecar. Both are renamed into
place before the sidecar; ``open_row_tokens`` checks their sizes. ``TextRows`` reads one column as a list of str.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.data.text_encoding import SizedTexts, encode_rows
from modelforge.data.token_file import (
    BATCH_CHARS,
    ArrayWriter,
    TokenFile,
    TokenSpan,
    TokenWriter,
    open_token_file,
    progress_bar,
)

KIND = "rows"
OFFSET_DTYPE = "<i8"
BATCH_ROWS = 8192  # texts handed to the batch encoder at once, at most (and at most BATCH_CHARS characters)
Encode = Callable[[list[str]], tuple[list[list[int]], int]]  # texts → (their id rows, how many were truncated)


def offsets_path(path: Path) -> Path:
    return path.with_suffix(".rows")


def text_paths(path: Path) -> tuple[Path, Path]:
    """The UTF-8 bytes of the stored texts and their int64 byte offsets."""
    return path.with_suffix(".texts"), path.with_suffix(".text_rows")


def _text_batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS or len(batch) >= BATCH_ROWS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _write_column(texts: Iterable[str], encode: Encode, ids: TokenWriter, offsets: ArrayWriter,
                  advance: Callable[[int], None]) -> dict[str, Any]:
    """Encode one column's texts into the two writers; returns its sidecar entry."""
    first_row, truncated, lengths = offsets.count - 1, 0, []
    for batch in _text_batches(texts):
        rows, cut = encode(batch)
        sizes = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        before = ids.count
        ids.write(np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(sizes.sum())))
        offsets.write(before + sizes.cumsum())  # where every row ends
        truncated, lengths = truncated + cut, [*lengths, sizes]
        advance(len(batch))
    counts = torch.from_numpy(np.concatenate(lengths)) if lengths else torch.zeros(0, dtype=torch.long)
    # the mean as the padded tensor's lengths gave it (float32), so the run summary stays the same
    return {"rows": [first_row, offsets.count - 1], "width": max(int(counts.max()) if len(counts) else 0, 1),
            "truncated": truncated, "mean_tokens": round(float(counts.float().mean()), 1)}


class TextWriter:
    """Appends columns of texts as UTF-8 rows (``K.texts``) with their byte offsets (``K.text_rows``)."""

    def __init__(self, path: Path):
        data, offsets = text_paths(path)
        self.data, self.offsets = ArrayWriter(data, np.uint8), ArrayWriter(offsets, OFFSET_DTYPE)
        self.offsets.write(np.zeros(1, dtype=np.int64))

    def write_column(self, texts: Iterable[str]) -> list[int]:
        """Appends the texts; returns their ``[start, end)`` row range."""
        first_row = self.offsets.count - 1
        for batch in _text_batches(texts):
            # surrogatepass: a text read with surrogate escapes comes back exactly as it was
            encoded = [text.encode("utf-8", errors="surrogatepass") for text in batch]
            sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            before = self.data.count
            self.data.write(np.frombuffer(b"".join(encoded), dtype=np.uint8))
            self.offsets.write(before + sizes.cumsum())
        return [first_row, self.offsets.count - 1]

    def finish(self) -> dict[str, Any]:
        """Renames both files into place; returns the sidecar's counts."""
        self.data.finish()
        self.offsets.finish()
        return {"text_rows": self.offsets.count - 1, "text_bytes": self.data.count}

    def discard(self) -> None:
        self.data.discard()
        self.offsets.discard()


def write_rows(path: Path, vocab_size: int, columns: Mapping[str, tuple[SizedTexts, Encode]],
               meta: dict[str, Any], keep_texts: bool = False) -> TokenFile:
    """Encode every column (a name → its texts and the encoder giving their id rows and truncated count) into
    ``path`` and its offsets, with a progress bar; with ``keep_texts`` the raw texts are stored too (under
    ``texts``). The sidecar (``meta`` plus the columns' entries, under ``splits``) is written last."""
    ids, offsets = TokenWriter(path, vocab_size), ArrayWriter(offsets_path(path), OFFSET_DTYPE)
    texts_out = TextWriter(path) if keep_texts else None
    try:
        offsets.write(np.zeros(1, dtype=np.int64))
        entries, text_entries = {}, {}
        total = sum(len(texts) for texts, _ in columns.values())
        with progress_bar("tokenizing the texts", total, "rows") as advance:
            for name, (texts, encode) in columns.items():
                entries[name] = _write_column(texts, encode, ids, offsets, advance)
                if texts_out is not None:
                    text_entries[name] = texts_out.write_column(texts)
        offsets.finish()
        if texts_out is not None:
            meta = {**meta, **texts_out.finish(), "texts": text_entries}
        return ids.commit({**meta, "kind": KIND, "row_count": offsets.count - 1, "splits": entries})
    except BaseException:
        ids.discard()
        offsets.discard()
        if texts_out is not None:
            texts_out.discard()
        raise


def write_row_tokens(path: Path, tok: Any, splits: Mapping[str, SizedTexts], max_length: int, pad_id: int,
                     meta: dict[str, Any]) -> TokenFile:
    """Every split's texts encoded by the ``tokenizers`` tokenizer ``tok`` and truncated to ``max_length``
    (``encode_rows``: what ``encode_padded`` pads)."""
    encode = partial(encode_rows, tok, max_length=max_length, pad_id=pad_id)
    return write_rows(path, tok.get_vocab_size(), {name: (texts, encode) for name, texts in splits.items()},
                      {**meta, "max_length": max_length})


def open_row_tokens(path: Path) -> TokenFile | None:
    """The row token file at ``path``, or None when it, its offsets or its sidecar is missing or incomplete."""
    found = open_token_file(path)
    if found is None or found.meta.get("kind") != KIND:
        return None
    try:
        expected = (int(found.meta["row_count"]) + 1) * np.dtype(OFFSET_DTYPE).itemsize
        if offsets_path(path).stat().st_size != expected:
            return None
        if "texts" in found.meta:
            data, text_offsets = text_paths(path)
            expected = (int(found.meta["text_rows"]) + 1) * np.dtype(OFFSET_DTYPE).itemsize
            if data.stat().st_size != int(found.meta["text_bytes"]) or text_offsets.stat().st_size != expected:
                return None
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return found


class RowView:
    """One column of a row token file (optionally only the ``rows`` chosen, in that order), memory-mapped on first
    use; pickling carries the paths, not the ids."""

    def __init__(self, tokens: TokenFile, column: str, rows: np.ndarray | None = None):
        entry = tokens.meta["splits"][column]
        start, end = entry["rows"]
        self.tokens, self.column, self.rows, self.width = tokens, column, rows, int(entry["width"])
        self.ids = TokenSpan(tokens.path, tokens.meta["dtype"], 0, int(tokens.meta["tokens"]))
        self.offsets = TokenSpan(offsets_path(tokens.path), OFFSET_DTYPE, start, end + 1)
        self.count = end - start if rows is None else len(rows)

    def __len__(self) -> int:
        return self.count

    def _rows(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
        local = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(local) and (local.min() < -self.count or local.max() >= self.count):
            raise IndexError(f"row index out of range for {self.count} rows")
        local = local % max(self.count, 1)
        return local if self.rows is None else self.rows[local]

    def lengths(self, indices: Sequence[int] | torch.Tensor | np.ndarray | None = None) -> np.ndarray:
        """Each row's number of ids (all rows when ``indices`` is None)."""
        if indices is None:
            every = np.diff(np.asarray(self.offsets.array))
            return every if self.rows is None else every[self.rows]
        rows = self._rows(indices)
        return self.offsets[rows + 1] - self.offsets[rows]

    def gather(self, indices: Sequence[int] | torch.Tensor | np.ndarray, pad_id: int, trim: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (n, width) int64 padded with ``pad_id``, lengths (n,)): ``width`` is the column's widest row, or
        with ``trim`` the widest of these rows."""
        rows = self._rows(indices)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        columns = np.arange(int(lengths.max(initial=1)) if trim else self.width)
        inside = columns < lengths[:, None]
        ids = self.ids[np.where(inside, starts[:, None] + columns, 0)].astype(np.int64)
        ids[~inside] = pad_id
        return torch.from_numpy(ids), torch.from_numpy(lengths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> RowView:
        return RowView(self.tokens, self.column, self._rows(indices))


class TextRows(Sequence[str]):
    """One text column of a row token file stored with ``keep_texts`` (optionally only the ``rows`` chosen, in that
    order), read like a list of str: ``[i]`` decodes one row, a slice or ``take`` a list, iteration reads the rows in
    order a block at a time. Memory-mapped on first use; pickling carries the paths, not the texts."""

    BLOCK = 4096  # rows whose offsets iteration reads at once

    def __init__(self, tokens: TokenFile, column: str, rows: np.ndarray | None = None):
        start, end = tokens.meta["texts"][column]
        data, offsets = text_paths(tokens.path)
        self.tokens, self.column, self.rows = tokens, column, rows
        self.data = TokenSpan(data, "u1", 0, int(tokens.meta["text_bytes"]))
        self.offsets = TokenSpan(offsets, OFFSET_DTYPE, start, end + 1)
        self.count = end - start if rows is None else len(rows)

    def __len__(self) -> int:
        return self.count

    def _rows(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        local = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(local) and (local.min() < -self.count or local.max() >= self.count):
            raise IndexError(f"text row index out of range for {self.count} rows")
        local = local % max(self.count, 1)
        return local if self.rows is None else self.rows[local]

    def _decode(self, start: int, end: int) -> str:
        return self.data[start:end].tobytes().decode("utf-8", errors="surrogatepass")

    def take(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> list[str]:
        """The texts of these rows, in this order."""
        rows = self._rows(indices)
        starts, ends = self.offsets[rows].tolist(), self.offsets[rows + 1].tolist()
        return [self._decode(a, b) for a, b in zip(starts, ends)]

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return self.take(range(*index.indices(self.count)))
        return self.take([index])[0]

    def __iter__(self) -> Iterator[str]:
        for first in range(0, self.count, self.BLOCK):
            yield from self.take(range(first, min(first + self.BLOCK, self.count)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (TextRows, list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # compared by content, like a list

    def __repr__(self) -> str:
        return f"TextRows({self.column!r}, {self.count} rows)"

    def subset(self, indices: Sequence[int] | np.ndarray) -> TextRows:
        return TextRows(self.tokens, self.column, self._rows(indices))


class TokenRows(Dataset):
    """One split of a row token file with its labels: item ``i`` is (ids padded to the split's widest row with
    ``pad_id``, length, label), all int64 — what a TensorDataset of the padded ids gave. Only the rows a batch takes
    are read; pickling (DataLoader workers) carries the paths, not the ids."""

    def __init__(self, tokens: TokenFile | RowView, split: str, labels: torch.Tensor, pad_id: int):
        self.view = tokens if isinstance(tokens, RowView) else RowView(tokens, split)
        self.split, self.pad_id, self.width = split, pad_id, self.view.width
        self.targets = torch.as_tensor(labels, dtype=torch.long)
        if len(self.targets) != len(self.view):
            raise ValueError(f"{len(self.targets)} labels for {len(self.view)} rows of split {split!r}")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, lengths, labels = self.get_batch([index])
        return ids[0], lengths[0], labels[0]

    def get_batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, lengths = self.view.gather(indices, self.pad_id)
        local = np.asarray(indices, dtype=np.int64).reshape(-1) % max(len(self), 1)
        return ids, lengths, self.targets[torch.from_numpy(local)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> TokenRows:
        """The rows at ``indices`` (the same width: items stay what they were)."""
        local = np.asarray(indices, dtype=np.int64).reshape(-1)
        return TokenRows(self.view.subset(local), self.split, self.targets[torch.from_numpy(local)], self.pad_id)
