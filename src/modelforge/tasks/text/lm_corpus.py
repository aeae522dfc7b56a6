"""The language model's corpus as a token file: read as a stream, cut contiguously into train/val/test by
characters, the tokenizer trained on (the first ``tokenizer.sample_chars`` characters of) the training part, and
every split encoded once into a memory-mapped token file that later runs of any recipe on the same data reuse.

The cache key is the tokenizer (a pretrained tokenizer's JSON, or the config a tokenizer is trained with) plus the
source (the files' resolved paths, sizes and modification times; the built-in text's hash) and what cuts the
splits (limit, fractions, encoding, pattern): editing a file, another tokenizer or other fractions make a new file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from modelforge.core.atomic import atomic_write_text
from modelforge.core.errors import ConfigError, DataError
from modelforge.data.formats.corpus_stream import corpus_blocks, count_characters, limited, split_at
from modelforge.data.text_encoding import build_tokenizer, load_tokenizer
from modelforge.data.token_file import (
    TokenFile,
    TokenWriter,
    build_lock,
    cache_key,
    encode_to_file,
    line_batches,
    open_token_file,
    source_stats,
    token_folder,
)

log = logging.getLogger("modelforge.data")


@dataclass
class LMCorpus:
    tokens: TokenFile
    tokenizer: Tokenizer
    files: list[Path]  # empty for the built-in text
    own_splits: list[str]  # splits a record source brought (the rest were cut off by fractions)
    used: dict[str, Any]  # data settings decided from the data (a record source's format and text column)

    def characters(self, split: str) -> int:
        return int(self.tokens.meta["characters"].get(split, 0))


@dataclass
class _Source:
    blocks: Callable[[], Iterator[str]]  # the whole corpus, as a fresh stream on every call
    identity: str
    folder: Path
    files: list[Path]
    own: dict[str, Callable[[], Iterator[str]]] | None = None  # a record source's own splits, each a stream
    text_files: bool = False  # plain-text files, counted by the file reader (which reports empty ones)
    used: dict[str, Any] = field(default_factory=dict)


def _row_blocks(records: Any, column: str, block_chars: int = 1 << 20) -> Iterator[str]:
    """A record split's text column as a stream: rows joined by a newline, empty rows skipped."""
    held: list[str] = []
    size = 0
    for row in records.rows([column]):
        text = row[column]
        if not isinstance(text, str):
            raise DataError(f"{records.where}: column {column!r} holds {type(text).__name__}, not text; set "
                            "data.text_column to a column of strings")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if text.strip():
            held.append(text if text.endswith("\n") else text + "\n")
            size += len(held[-1])
        if size >= block_chars:
            yield "".join(held)
            held, size = [], 0
    if held:
        yield "".join(held)


def _record_source(cfg: Any, fmt: str) -> _Source:
    """A Hugging Face dataset or WebDataset shards: the text column of each row, the source's own splits kept."""
    from itertools import chain

    from modelforge.data.formats.records import one_text_column, open_records, source_files

    splits = open_records(cfg.path, fmt)
    column = one_text_column(splits["train"], cfg.text_column)
    files = source_files(cfg.path, fmt)
    identity = json.dumps([source_stats(files), fmt, column])
    streams = {name: (lambda r=records: _row_blocks(r, column)) for name, records in splits.items()}
    own = streams if len(streams) > 1 else None
    return _Source(lambda: chain.from_iterable(s() for s in streams.values()), identity,
                   token_folder(files[0].parent if fmt == "webdataset" else Path(cfg.path).expanduser()), files, own,
                   used={"format": fmt, "text_column": column})


def _source(cfg: Any) -> _Source:
    from modelforge.data.cache import cache_dir
    from modelforge.data.formats.text_corpus import check_encoding, corpus_files

    if cfg.source == "shakespeare":
        from modelforge.data.builtin.shakespeare import load_shakespeare

        text = load_shakespeare()
        return _Source(lambda: iter([text]), hashlib.sha256(text.encode()).hexdigest(),
                       cache_dir("language_modeling"), [])
    if not cfg.path:
        raise ConfigError("data.source=file needs data.path=FILE_OR_FOLDER (plain .txt text)")
    from modelforge.data.formats.records import detect_format

    fmt = cfg.format or detect_format(cfg.path) or "text"
    if fmt != "text":
        return _record_source(cfg, fmt)
    path = Path(cfg.path).expanduser()
    check_encoding(cfg.encoding)
    files = corpus_files(path, cfg.pattern)
    identity = json.dumps([source_stats(files), cfg.encoding, cfg.pattern])
    return _Source(lambda: corpus_blocks(files, cfg.encoding), identity, token_folder(path), files, text_files=True)


def split_ends(characters: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Where each split ends, in characters: train first, then val, then test (when its fraction is > 0)."""
    train_end = int(characters * (1 - val_fraction - test_fraction))
    if train_end <= 0:
        raise ConfigError("data.val_fraction + data.test_fraction leave no training text; lower them")
    ends = {"train": train_end, "val": int(characters * (1 - test_fraction))}
    if test_fraction > 0:
        ends["test"] = characters
    return ends


# Part of the token file's key: a file cut by an earlier rule (a source's own splits only, none held out of its
# training text) is not reused.
SPLIT_LAYOUT = "missing splits held out of own train"


def held_out_ends(characters: int, shares: dict[str, float]) -> dict[str, int]:
    """Where ``train`` and then each split of ``shares`` (its share of ``characters``) end within one text: the
    held-out splits are cut from its end, in order."""
    cuts = {name: int(characters * share) for name, share in shares.items()}
    train_end = characters - sum(cuts.values())
    if train_end <= 0:
        raise ConfigError("data.val_fraction + data.test_fraction leave no training text; lower them")
    ends, end = {"train": train_end}, train_end
    for name, cut in cuts.items():
        end += cut
        ends[name] = end
    return ends


def prepare_corpus(cfg: Any, pretrained: Tokenizer | None) -> LMCorpus:
    """The corpus's token file (built on the first run, opened from then on) and its tokenizer."""
    source = _source(cfg)
    tokenizer_id = pretrained.to_str() if pretrained is not None else cfg.tokenizer.model_dump_json()
    key = cache_key(tokenizer_id, source.identity, f"{cfg.limit}|{cfg.val_fraction}|{cfg.test_fraction}",
                    SPLIT_LAYOUT)
    path, tok_file = source.folder / f"{key}.tokens", source.folder / f"{key}.tokenizer.json"
    own = list(source.own or {})
    with build_lock(path):  # under torchrun one rank tokenizes; the others wait, then map the finished file
        found = open_token_file(path)
        if found is None or not tok_file.is_file():
            found = _build(cfg, source, pretrained, path, tok_file)
    return LMCorpus(found, _tokenizer_of(tok_file), source.files, own, source.used)


def _tokenizer_of(tok_file: Path) -> Tokenizer:
    return load_tokenizer(tok_file.read_text(encoding="utf-8"), str(tok_file))


def _count(cfg: Any, source: _Source) -> dict[str, int]:
    """Characters of each own split of a record source, or of the whole corpus (as ``{"": n}``)."""
    if source.own:
        counts = {name: sum(len(b) for b in limited(blocks(), cfg.limit)) for name, blocks in source.own.items()}
    elif not source.text_files:
        counts = {"": sum(len(b) for b in limited(source.blocks(), cfg.limit))}
    else:
        characters, skipped = count_characters(source.files, cfg.encoding, cfg.limit)
        if skipped:
            log.warning("skipped %d empty corpus file(s), first: %s", len(skipped), skipped[0])
        counts = {"": characters}
    if not any(counts.values()):
        raise DataError(f"corpus {cfg.path}: every file is empty; nothing to train on")
    return counts


def _ends(cfg: Any, source: _Source) -> tuple[dict[str, int], Callable[[], Iterator[str]]]:
    """Where each split ends in the stream, and the stream (own splits one after another, each limited)."""
    from itertools import chain

    counts = _count(cfg, source)
    if not source.own:
        return split_ends(counts[""], cfg.val_fraction, cfg.test_fraction), lambda: limited(source.blocks(), cfg.limit)
    # the splits the source does not bring are cut from the end of its training text, as from a plain corpus
    missing = {split: share for split, share in (("val", cfg.val_fraction), ("test", cfg.test_fraction))
               if split not in counts and share > 0}
    ends, total = {}, 0
    for name, count in counts.items():
        parts = held_out_ends(count, missing) if name == "train" and missing else {name: count}
        ends.update({part: total + end for part, end in parts.items()})
        total += count
    own = source.own
    return ends, lambda: chain.from_iterable(limited(own[name](), cfg.limit) for name in counts)


def _build(cfg: Any, source: _Source, pretrained: Tokenizer | None, path: Path, tok_file: Path) -> TokenFile:
    ends, stream = _ends(cfg, source)
    tokenizer = pretrained
    if tokenizer is None:
        sample_end = min(ends["train"], cfg.tokenizer.sample_chars or ends["train"])
        sample = split_at(stream(), {"train": sample_end})  # streamed into the trainer, never held as a list
        lines = (line for _, batch, _ in line_batches(sample) for line in batch)
        tokenizer = build_tokenizer(cfg.tokenizer.as_tokenizer_config(), lines)
    writer = TokenWriter(path, tokenizer.get_vocab_size())
    try:
        characters = list(ends.values())[-1]
        ranges, seconds = encode_to_file(tokenizer, split_at(stream(), ends), writer, characters,
                                         "tokenizing the corpus")
        previous = 0
        for split in ends:  # a split with no text: an empty range where it would start
            previous = ranges.setdefault(split, [previous, previous])[1]
        text = tokenizer.to_str()
        atomic_write_text(tok_file, text)
        starts = [0, *ends.values()]
        meta = {"splits": ranges, "characters": {s: ends[s] - starts[i] for i, s in enumerate(ends)},
                "vocab_size": tokenizer.get_vocab_size(), "tokenizer_sha256": hashlib.sha256(text.encode()).hexdigest(),
                "sources": source_stats(source.files), "encode_seconds": round(seconds, 3)}
        return writer.commit(meta)
    except BaseException:
        writer.discard()
        raise
