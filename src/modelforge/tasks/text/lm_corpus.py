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
from dataclasses import dataclass
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

    def characters(self, split: str) -> int:
        return int(self.tokens.meta["characters"].get(split, 0))


@dataclass
class _Source:
    blocks: Callable[[], Iterator[str]]  # the whole corpus, as a fresh stream on every call
    identity: str
    folder: Path
    files: list[Path]


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
    path = Path(cfg.path).expanduser()
    check_encoding(cfg.encoding)
    files = corpus_files(path, cfg.pattern)
    identity = json.dumps([source_stats(files), cfg.encoding, cfg.pattern])
    return _Source(lambda: corpus_blocks(files, cfg.encoding), identity, token_folder(path), files)


def split_ends(characters: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Where each split ends, in characters: train first, then val, then test (when its fraction is > 0)."""
    train_end = int(characters * (1 - val_fraction - test_fraction))
    if train_end <= 0:
        raise ConfigError("data.val_fraction + data.test_fraction leave no training text; lower them")
    ends = {"train": train_end, "val": int(characters * (1 - test_fraction))}
    if test_fraction > 0:
        ends["test"] = characters
    return ends


def prepare_corpus(cfg: Any, pretrained: Tokenizer | None) -> LMCorpus:
    """The corpus's token file (built on the first run, opened from then on) and its tokenizer."""
    source = _source(cfg)
    tokenizer_id = pretrained.to_str() if pretrained is not None else cfg.tokenizer.model_dump_json()
    key = cache_key(tokenizer_id, source.identity, f"{cfg.limit}|{cfg.val_fraction}|{cfg.test_fraction}")
    path, tok_file = source.folder / f"{key}.tokens", source.folder / f"{key}.tokenizer.json"
    found = open_token_file(path)
    if found is not None and tok_file.is_file():
        return LMCorpus(found, load_tokenizer(tok_file.read_text(encoding="utf-8"), str(tok_file)), source.files)
    return LMCorpus(_build(cfg, source, pretrained, path, tok_file), _tokenizer_of(tok_file), source.files)


def _tokenizer_of(tok_file: Path) -> Tokenizer:
    return load_tokenizer(tok_file.read_text(encoding="utf-8"), str(tok_file))


def _count(cfg: Any, source: _Source) -> int:
    if not source.files:
        return sum(len(b) for b in limited(source.blocks(), cfg.limit))
    characters, skipped = count_characters(source.files, cfg.encoding, cfg.limit)
    if skipped:
        log.warning("skipped %d empty corpus file(s), first: %s", len(skipped), skipped[0])
    if characters == 0:
        raise DataError(f"corpus {cfg.path}: every file is empty; nothing to train on")
    return characters


def _build(cfg: Any, source: _Source, pretrained: Tokenizer | None, path: Path, tok_file: Path) -> TokenFile:
    characters = _count(cfg, source)
    ends = split_ends(characters, cfg.val_fraction, cfg.test_fraction)
    tokenizer = pretrained
    if tokenizer is None:
        sample_end = min(ends["train"], cfg.tokenizer.sample_chars or ends["train"])
        sample = split_at(limited(source.blocks(), cfg.limit), {"train": sample_end})
        lines = [line for _, batch, _ in line_batches(sample) for line in batch]
        tokenizer = build_tokenizer(cfg.tokenizer.as_tokenizer_config(), lines)
        del lines
    writer = TokenWriter(path, tokenizer.get_vocab_size())
    try:
        pieces = split_at(limited(source.blocks(), cfg.limit), ends)
        ranges, seconds = encode_to_file(tokenizer, pieces, writer, characters, "tokenizing the corpus")
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
