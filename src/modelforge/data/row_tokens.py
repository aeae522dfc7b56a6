"""Row token files: texts (one id sequence per row) tokenized once into a memory-mapped token file.

Beside the flat ids of ``K.tokens`` (``data/token_file.py``: uint16/uint32, sidecar ``K.json``, atomic renames,
``build_lock``) a row file has ``K.rows``: little-endian int64 offsets, row ``r`` being ``ids[offsets[r]:
offsets[r + 1]]`` — one array for all columns, each column (a classifier's split; a translator's ``train/source``,
``train/target``, …) a ``[start, end)`` range of rows in the sidecar with its widest row, its number of truncated
texts and its mean length. ``RowView`` reads one column (padded ids and lengths of any rows, by numpy indexing on
the maps); ``TokenRows`` is a classifier's split as the in-memory padded tensor gave it: item ``i`` is (ids padded
to the split's widest row, length, label), and ``get_batch`` gathers a batch with one index operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

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


def write_rows(path: Path, vocab_size: int, columns: Mapping[str, tuple[SizedTexts, Encode]],
               meta: dict[str, Any]) -> TokenFile:
    """Encode every column (a name → its texts and the encoder giving their id rows and truncated count) into
    ``path`` and its offsets, with a progress bar; the sidecar (``meta`` plus the columns' entries, under
    ``splits``) is written last."""
    ids, offsets = TokenWriter(path, vocab_size), ArrayWriter(offsets_path(path), OFFSET_DTYPE)
    try:
        offsets.write(np.zeros(1, dtype=np.int64))
        entries = {}
        total = sum(len(texts) for texts, _ in columns.values())
        with progress_bar("tokenizing the texts", total, "rows") as advance:
            for name, (texts, encode) in columns.items():
                entries[name] = _write_column(texts, encode, ids, offsets, advance)
        offsets.finish()
        return ids.commit({**meta, "kind": KIND, "row_count": offsets.count - 1, "splits": entries})
    except BaseException:
        ids.discard()
        offsets.discard()
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
