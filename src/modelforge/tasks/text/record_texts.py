"""A source's texts for the text classifier — a record split or a CSV/TSV/JSONL table — read as streams rather than
held as lists.

Holding out the validation and test rows needs only each row's label and the hash of its text, so the first pass
over a source (for a table, ``text_table.checked_text_rows``: the table reader's checks and warnings) keeps the
labels alone; the texts of a split are then a ``SourceTexts``: its length and the places of its rows in the source,
read again (only the two columns; for a table, ``stream_text_rows``) whenever it is iterated — by the tokenizer's
training, ``max_length=auto``'s sample and the row token file's writer, which hold one batch at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

log = logging.getLogger("modelforge.data")
Pairs = Callable[[], Iterator[tuple[str, str]]]  # a fresh (text, label) stream of one source


def record_pairs(records: Any, text_column: str, label_column: str, warn: bool = True) -> Iterator[tuple[str, str]]:
    """A record split's (text, label) rows, read as a stream; rows with an empty text or label are skipped (with a
    warning at the end, when ``warn``)."""
    skipped = 0
    for row in records.rows([text_column, label_column]):
        text, label = str(row[text_column]), str(row[label_column])
        if text.strip() and label.strip():
            yield text, label
        else:
            skipped += 1
    if skipped and warn:
        log.warning("%s: skipped %d row(s) with an empty text or label", records.where, skipped)


class SourceTexts:
    """The texts at ``places`` (ascending; None: every row) of a source, ``count`` of them, read again from
    ``pairs`` on each iteration."""

    def __init__(self, pairs: Pairs, places: np.ndarray | None, count: int):
        self.pairs, self.places, self.count = pairs, places, count

    def __len__(self) -> int:
        return self.count

    def subset(self, picks: list[int]) -> SourceTexts:
        """The texts at ``picks`` (ascending positions among these)."""
        every = np.arange(self.count) if self.places is None else self.places
        return SourceTexts(self.pairs, every[picks], len(picks))

    def __iter__(self) -> Iterator[str]:
        if self.places is None:
            yield from (text for text, _ in self.pairs())
            return
        wanted = iter(self.places.tolist())
        target = next(wanted, None)
        for position, (text, _) in enumerate(self.pairs()):
            if target is None:
                return
            if position == target:
                yield text
                target = next(wanted, None)


def labels_and_keys(pairs: Iterator[tuple[str, str]], labels: list[str]) -> Iterator[str]:
    """The texts of ``pairs`` as hash keys, appending each row's label to ``labels`` as it passes (one object per
    distinct label, however many rows)."""
    names: dict[str, str] = {}
    for text, label in pairs:
        labels.append(names.setdefault(label, label))
        yield text
