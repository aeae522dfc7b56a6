"""Record sources — a local Hugging Face dataset or WebDataset shards — behind one interface the text tasks read:
splits of rows (``{column: value}``), read lazily, with the files that make them up (for cache keys) and the share
one of several processes reads.

``data.path`` selects one by what it holds (``detect_format``): a ``save_to_disk`` folder, ``.parquet``/``.arrow``
files or a folder of ``.jsonl`` files → ``hf``; ``.tar`` shards or a brace pattern of them → ``webdataset``;
``data.format=hf|webdataset`` says it when the path alone does not (a single ``.jsonl`` file is otherwise a table).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelforge.core.errors import DataError
from modelforge.data.formats.table_columns import PROFILE_ROWS

RecordFormat = Literal["hf", "webdataset"]
RECORD_FORMATS = ("hf", "webdataset")


def detect_format(path: str) -> RecordFormat | None:
    """``hf`` or ``webdataset`` when ``path`` holds such a dataset, else None (a plain file format)."""
    from modelforge.data.formats.hf_dataset import holds_data_files, is_saved_dataset
    from modelforge.data.formats.webdataset_shards import is_shard_source

    if is_shard_source(path):
        return "webdataset"
    root = Path(path).expanduser()
    if is_saved_dataset(root) or root.suffix.lower() in (".parquet", ".arrow"):
        return "hf"
    if root.is_dir() and holds_data_files(root):
        return "hf"
    return None


@dataclass
class Records:
    """One split of a record source."""

    format: RecordFormat
    where: str
    hf: Any = None  # datasets.Dataset
    shards: list[Path] = field(default_factory=list)

    def columns(self) -> list[str]:
        if self.format == "hf":
            return list(self.hf.column_names)
        from modelforge.data.formats.webdataset_shards import columns_of

        return columns_of(self.shards)

    def rows(self, columns: list[str]) -> Iterator[dict[str, Any]]:
        """Rows holding ``columns``, in order; a row without one of them is an error naming the column."""
        if self.format == "hf":
            from modelforge.data.formats.hf_dataset import iter_rows

            yield from iter_rows(self.hf, columns)
            return
        from modelforge.data.formats.webdataset_shards import iter_samples

        for row in iter_samples(self.shards):
            missing = [c for c in columns if c not in row]
            if missing:
                raise DataError(f"{self.where}: a sample has no {missing[0]!r} member (it has {sorted(row)}); set "
                                "the column options to members every sample has")
            yield {c: row[c] for c in columns}

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows([name])]


def open_records(path: str, format: RecordFormat, rank: int = 0, world_size: int = 1) -> dict[str, Records]:
    """``{train, val?, test?: Records}`` of ``path``; with ``world_size`` > 1 only the share of process ``rank``."""
    if format == "hf":
        from modelforge.data.cache import cache_dir
        from modelforge.data.formats.hf_dataset import open_hf_splits, rank_share

        splits = open_hf_splits(Path(path).expanduser(), cache_dir("hf_datasets"))
        return {name: Records("hf", f"{path} ({name})", hf=rank_share(ds, rank, world_size))
                for name, ds in splits.items()}
    from modelforge.data.formats.webdataset_shards import rank_shards, shard_paths, split_shards

    return {name: Records("webdataset", f"{path} ({name})", shards=rank_shards(shards, rank, world_size))
            for name, shards in split_shards(shard_paths(path)).items()}


def source_files(path: str, format: RecordFormat) -> list[Path]:
    """The files a record source is made of (their sizes and modification times key a token file)."""
    if format == "hf":
        from modelforge.data.formats.hf_dataset import dataset_files

        return dataset_files(Path(path).expanduser())
    from modelforge.data.formats.webdataset_shards import shard_paths

    return shard_paths(path)


def text_columns(records: Records) -> list[str]:
    """Columns whose first rows hold strings."""
    columns = records.columns()
    sample = [row for _, row in zip(range(50), records.rows(columns))]
    return [c for c in columns if sample and all(isinstance(row[c], str) for row in sample)]


def infer_text_label(records: Records, text_column: str | None, label_column: str | None) -> tuple[str, str]:
    """(text column, label column): the given names, or the one text-like / label-like column of the first rows."""
    from modelforge.data.formats.table_columns import ColumnProfile, pick_columns

    if text_column and label_column:
        return text_column, label_column
    columns = records.columns()
    rows = [row for _, row in zip(range(PROFILE_ROWS), records.rows(columns))]
    profiles = []
    for column in columns:
        values = [str(row[column]).strip() for row in rows if isinstance(row[column], (str, int))]
        if len(values) == len(rows):  # lists, dicts, images: never a text or a label
            words = sum(len(v.split()) for v in values) / max(len(values), 1)
            profiles.append(ColumnProfile(column, len(set(values) - {""}), words))
    return pick_columns(profiles, len(rows), text_column, label_column, records.where)


def one_text_column(records: Records, text_column: str | None) -> str:
    """The column of running text: the given one, one named ``text``, or the only string column."""
    if text_column:
        return text_column
    strings = text_columns(records)
    if "text" in strings or len(strings) == 1:
        return "text" if "text" in strings else strings[0]
    raise DataError(f"{records.where}: cannot tell which column holds the text (string columns: {strings or 'none'}); "
                    "set data.text_column")


def _pair_columns(records: Records, source_field: str | None, target_field: str | None, source_lang: str | None,
                  target_lang: str | None) -> tuple[str, str, str | None]:
    """(source column, target column, None), or (dict column, source key, target key) for a column of
    ``{lang: text}`` dicts (Hugging Face's ``translation`` feature)."""
    if source_field and target_field:
        return source_field, target_field, None
    columns = records.columns()
    if source_lang and target_lang:
        if source_lang in columns and target_lang in columns:  # e.g. shard members 0001.en / 0001.es
            return source_lang, target_lang, None
        first = next(records.rows(columns), {})
        for column in columns:
            value = first.get(column)
            if isinstance(value, dict) and source_lang in value and target_lang in value:
                return column, source_lang, target_lang
        raise DataError(f"{records.where}: no columns {source_lang!r}/{target_lang!r} and no column of "
                        f"{{{source_lang}: …, {target_lang}: …}} translations (columns: {', '.join(columns)})")
    strings = text_columns(records)
    if len(strings) != 2:
        raise DataError(f"{records.where}: cannot tell the source and target columns (string columns: "
                        f"{strings or 'none'}); set data.source_field and data.target_field")
    return strings[0], strings[1], None


def read_pairs(records: Records, source_field: str | None = None, target_field: str | None = None,
               source_lang: str | None = None, target_lang: str | None = None) -> tuple[list[str], list[str]]:
    """(sources, targets) of a split; pairs with an empty side are skipped."""
    column, second, third = _pair_columns(records, source_field, target_field, source_lang, target_lang)
    sources, targets = [], []
    for row in records.rows([column] if third else [column, second]):
        source, target = (row[column][second], row[column][third]) if third else (row[column], row[second])
        if isinstance(source, str) and isinstance(target, str) and source.strip() and target.strip():
            sources.append(source.strip())
            targets.append(target.strip())
    if not sources:
        raise DataError(f"{records.where}: no sentence pairs with text on both sides")
    return sources, targets
