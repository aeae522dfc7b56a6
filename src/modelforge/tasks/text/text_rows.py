"""The text classifier's splits as a row token file (``data/row_tokens.py``): every split's texts tokenized once and
reused by later runs on the same data, so the ids never sit in memory as a padded tensor.

The cache key is the tokenizer (a pretrained one's JSON — ``data.tokenizer.kind=pretrained`` or a Hugging Face
checkpoint's — or the config a tokenizer is trained with), the source (the files' resolved paths, sizes and
modification times; for a built-in set, a hash of its texts and labels) and every data setting that cuts, reads or
truncates the rows (columns, format, encoding, fractions, split seed, limit, max_length). A trained tokenizer is kept
beside the ids as ``K.tokenizer.json``; ``max_length=auto`` is resolved on the first build and kept in the sidecar.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from modelforge.core.atomic import atomic_write_text
from modelforge.data.row_tokens import open_row_tokens, write_row_tokens
from modelforge.data.text_encoding import auto_max_length, build_tokenizer, load_tokenizer, pad_id_of
from modelforge.data.token_file import TokenFile, build_lock, cache_key, source_stats, token_folder

log = logging.getLogger("modelforge.data")
# data settings that do not change the rows' ids (the files are keyed by their stats, the tokenizer by itself)
_NOT_KEYED = {"path", "val_path", "test_path", "tokenizer", "init_encoder"}


@dataclass
class TextRows:
    tokens: TokenFile
    tokenizer: Tokenizer
    max_length: int
    built: bool  # tokenized by this call (False: an earlier run's file was reused)


@dataclass
class RowSource:
    """Where the rows came from: the files read (none for a built-in set) and the folder their token file goes in
    (None: the cache folder)."""

    files: list[Path]
    home: Path | None


def _source_identity(source: RowSource, parts: Mapping[str, tuple[list[str], list[str]]]) -> str:
    if source.files:
        return json.dumps(source_stats(source.files))
    digest = hashlib.sha256()  # a built-in set: its content (small) is its identity
    for split, (texts, labels) in sorted(parts.items()):
        for value in (split, *texts, *labels):
            digest.update(value.encode("utf-8", errors="surrogatepass") + b"\0")
    return digest.hexdigest()


def _settings(cfg: Any) -> str:
    return json.dumps(cfg.model_dump(exclude=_NOT_KEYED), sort_keys=True, default=str)


def prepare_text_rows(cfg: Any, parts: Mapping[str, tuple[list[str], list[str]]], given: Tokenizer | None,
                      source: RowSource) -> TextRows:
    """The row token file of ``parts`` ({split: (texts, labels)}), built on the first run and opened from then on.
    ``given`` is a tokenizer brought by the model or the recipe (used as it is); otherwise one of ``cfg.tokenizer``
    is trained on the training texts."""
    if given is None and cfg.tokenizer.kind == "pretrained":
        given = build_tokenizer(cfg.tokenizer, [])
    tokenizer_id = given.to_str() if given is not None else cfg.tokenizer.model_dump_json()
    key = cache_key("text-rows", tokenizer_id, _source_identity(source, parts), _settings(cfg))
    folder = token_folder(source.home)
    path, tok_file = folder / f"{key}.tokens", folder / f"{key}.tokenizer.json"
    with build_lock(path):  # under torchrun one rank tokenizes; the others wait, then map the finished file
        found = open_row_tokens(path)
        if found is not None and tok_file.is_file():
            tok = given or load_tokenizer(tok_file.read_text(encoding="utf-8"), str(tok_file))
            log.info("token ids of the texts: %s (reused)", path)
            return TextRows(found, tok, int(found.meta["max_length"]), built=False)
        return _build(cfg, parts, given, path, tok_file, source)


def _build(cfg: Any, parts: Mapping[str, tuple[list[str], list[str]]], given: Tokenizer | None, path: Path,
           tok_file: Path, source: RowSource) -> TextRows:
    train_texts = parts["train"][0]
    tok = given or build_tokenizer(cfg.tokenizer, train_texts)
    max_length = cfg.max_length
    if max_length == "auto":
        max_length = auto_max_length(tok, train_texts, cfg.max_length_cap)
    text = tok.to_str()
    atomic_write_text(tok_file, text)  # before the ids: the sidecar, written last, vouches for both
    meta = {"vocab_size": tok.get_vocab_size(), "tokenizer_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "sources": source_stats(source.files)}
    tokens = write_row_tokens(path, tok, {split: texts for split, (texts, _) in parts.items()}, max_length,
                              pad_id_of(tok), meta)
    log.info("token ids of the texts: %s (%d rows)", path, tokens.meta["row_count"])
    return TextRows(tokens, tok, max_length, built=True)
