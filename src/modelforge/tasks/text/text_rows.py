"""The text classifier's splits as a row token file (``data/row_tokens.py``): every split's texts tokenized once and
reused by later runs on the same data, so the ids never sit in memory as a padded tensor.

The cache key is the tokenizer (a pretrained one's JSON — ``data.tokenizer.kind=pretrained`` or a Hugging Face
checkpoint's — or the config a tokenizer is trained with), the source (the files' resolved paths, sizes and
modification times; for a built-in set, a hash of its texts and labels) and every data setting that cuts, reads or
truncates the rows (columns, format, encoding, fractions, split seed, limit, max_length) as the recipe gives them,
before columns are inferred: so a file source's key needs no row of it. A trained tokenizer is kept beside the ids
as ``K.tokenizer.json``; ``max_length=auto`` is resolved on the first build and kept in the sidecar.

Everything else a run takes from the rows is kept too, so a reused file reads none of them: ``K.labels`` (int32, a
class index per row, in row order), ``K.sources`` (int64, row order: each row's place in its split's source — the
table or record split it was read from, counting only the rows kept — so the TF-IDF baseline's few texts can be read
again) and, in the sidecar, the class names, what was read, where each split came from and the settings the reading
resolved.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from modelforge.core.atomic import atomic_write_text
from modelforge.core.errors import DataError
from modelforge.data.row_tokens import open_row_tokens, write_row_tokens
from modelforge.data.text_encoding import SizedTexts, auto_max_length, build_tokenizer, load_tokenizer, pad_id_of
from modelforge.data.token_file import ArrayWriter, TokenFile, build_lock, cache_key, source_stats, token_folder

log = logging.getLogger("modelforge.data")
# data settings that do not change the rows' ids (the files are keyed by their stats, the tokenizer by itself)
_NOT_KEYED = {"path", "val_path", "test_path", "tokenizer", "init_encoder"}
LABEL_DTYPE, SOURCE_DTYPE = "<i4", "<i8"
Parts = dict[str, tuple[SizedTexts, list[str]]]  # split → (texts: a list, or a stream of known length; labels)


@dataclass
class RowSource:
    """Where the rows come from: the files read (none for a built-in set, whose ``identity`` is then a hash of its
    texts and labels) and the folder their token file goes in (None: the cache folder)."""

    files: list[Path]
    home: Path | None
    identity: str | None = None


@dataclass
class ReadRows:
    """What reading the source gave: the splits, the class names, what the sidecar keeps of the reading (``meta``:
    ``read_what``, ``origins``, ``used``) and, per split, (its source, each row's place in that source)."""

    parts: Parts
    label_names: list[str]
    meta: dict[str, Any]
    source_rows: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict)


@dataclass
class TextRows:
    tokens: TokenFile
    tokenizer: Tokenizer
    max_length: int
    built: bool  # read and tokenized by this call (False: an earlier run's file was reused; no row was read)
    tokenizer_id: str = ""  # with ``identity``, what keys the file besides the settings
    identity: str = ""

    def alias_as(self, settings: str) -> None:
        """Let a recipe whose settings are ``settings`` (this run's, resolved: the columns inferred, max_length=auto
        computed — what a loaded run's recipe.yaml says) find this file without reading its rows (``K.alias``)."""
        path = self.tokens.path.parent / f"{cache_key('text-rows', self.tokenizer_id, self.identity, settings)}.tokens"
        alias = path.with_suffix(".alias")
        if path != self.tokens.path and not alias.is_file():
            atomic_write_text(alias, self.tokens.path.name)

    @property
    def meta(self) -> dict[str, Any]:
        return self.tokens.meta

    @property
    def splits(self) -> list[str]:
        return list(self.meta["split_order"])

    def size(self, split: str) -> int:
        start, end = self.meta["splits"][split]["rows"]
        return end - start

    def _column(self, suffix: str, dtype: str, split: str) -> np.ndarray:
        start, end = self.meta["splits"][split]["rows"]
        return np.memmap(self.tokens.path.with_suffix(suffix), dtype=dtype, mode="r")[start:end]

    def labels(self, split: str) -> np.ndarray:
        """The split's class indices (int64), read from ``K.labels``."""
        return self._column(".labels", LABEL_DTYPE, split).astype(np.int64)

    def source_rows(self, split: str, rows: np.ndarray) -> tuple[str, np.ndarray]:
        """(the source the split was read from, where its ``rows`` are in it), from ``K.sources``."""
        return self.meta["sources_of"][split], np.asarray(self._column(".sources", SOURCE_DTYPE, split)[rows])


def content_identity(parts: Parts) -> str:
    """A built-in set's identity: a hash of its (small) content."""
    digest = hashlib.sha256()
    for split, (texts, labels) in sorted(parts.items()):
        for value in (split, *texts, *labels):
            digest.update(value.encode("utf-8", errors="surrogatepass") + b"\0")
    return digest.hexdigest()


def settings_key(cfg: Any) -> str:
    """The data settings as the recipe gives them (call before reading resolves any of them)."""
    return json.dumps(cfg.model_dump(exclude=_NOT_KEYED), sort_keys=True, default=str)


def _complete(found: TokenFile | None) -> bool:
    """True when the labels and sources files the sidecar vouches for are both there."""
    if found is None or "split_order" not in found.meta:
        return False
    try:
        sizes = [found.path.with_suffix(suffix).stat().st_size for suffix in (".labels", ".sources")]
    except OSError:
        return False
    rows = int(found.meta["row_count"])
    return sizes == [rows * np.dtype(LABEL_DTYPE).itemsize, rows * np.dtype(SOURCE_DTYPE).itemsize]


def prepare_text_rows(cfg: Any, settings: str, given: Tokenizer | None, source: RowSource,
                      read: Callable[[], ReadRows]) -> TextRows:
    """The row token file of the source, built on the first run (``read`` gives the rows) and opened from then on
    without reading any row. ``settings`` is ``settings_key(cfg)`` taken before reading; ``given`` is a tokenizer
    brought by the model or the recipe (used as it is); otherwise one of ``cfg.tokenizer`` is trained on the
    training texts."""
    if given is None and cfg.tokenizer.kind == "pretrained":
        given = build_tokenizer(cfg.tokenizer, [])
    tokenizer_id = given.to_str() if given is not None else cfg.tokenizer.model_dump_json()
    identity = source.identity or json.dumps(source_stats(source.files))
    folder = token_folder(source.home)
    path = folder / f"{cache_key('text-rows', tokenizer_id, identity, settings)}.tokens"
    with build_lock(path):  # under torchrun one rank reads and tokenizes; the others wait, then map the file
        for candidate in (path, _aliased(path)):
            found = open_row_tokens(candidate) if candidate is not None else None
            tok_file = candidate.with_suffix(".tokenizer.json") if candidate is not None else None
            if _complete(found) and tok_file.is_file():
                tok = given or load_tokenizer(tok_file.read_text(encoding="utf-8"), str(tok_file))
                log.info("token ids of the texts: %s (reused)", candidate)
                return TextRows(found, tok, int(found.meta["max_length"]), False, tokenizer_id, identity)
        tokens = _build(cfg, read(), given, path, path.with_suffix(".tokenizer.json"), source)
        return TextRows(tokens.tokens, tokens.tokenizer, tokens.max_length, True, tokenizer_id, identity)


def _aliased(path: Path) -> Path | None:
    """The token file ``K.alias`` names (a file built under other settings that resolved to these), if any."""
    alias = path.with_suffix(".alias")
    return alias.parent / alias.read_text(encoding="utf-8").strip() if alias.is_file() else None


def _write_side_files(path: Path, read: ReadRows) -> dict[str, Any]:
    """``K.labels`` and ``K.sources`` (finished before the sidecar that vouches for them); the sidecar's entries."""
    index = {name: i for i, name in enumerate(read.label_names)}
    labels, sources = ArrayWriter(path.with_suffix(".labels"), LABEL_DTYPE), ArrayWriter(
        path.with_suffix(".sources"), SOURCE_DTYPE)
    try:
        for split, (_, values) in read.parts.items():  # the token file's row order
            labels.write(np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values)))
            sources.write(read.source_rows[split][1])
        labels.finish()
        sources.finish()
    except BaseException:
        labels.discard()
        sources.discard()
        raise
    # the splits' order (train, then held out, then given) is kept: the sidecar's keys are sorted
    return {"classes": list(read.label_names), "split_order": list(read.parts),
            "sources_of": {k: v[0] for k, v in read.source_rows.items()},
            **read.meta}


def _build(cfg: Any, read: ReadRows, given: Tokenizer | None, path: Path, tok_file: Path,
           source: RowSource) -> TextRows:
    train_texts = read.parts["train"][0]
    tok = given or build_tokenizer(cfg.tokenizer, train_texts)
    max_length = cfg.max_length
    if max_length == "auto":
        max_length = auto_max_length(tok, train_texts, cfg.max_length_cap)
    text = tok.to_str()
    atomic_write_text(tok_file, text)  # before the ids: the sidecar, written last, vouches for both
    meta = {"vocab_size": tok.get_vocab_size(), "tokenizer_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "sources": source_stats(source.files), **_write_side_files(path, read)}
    tokens = write_row_tokens(path, tok, {split: texts for split, (texts, _) in read.parts.items()}, max_length,
                              pad_id_of(tok), meta)
    log.info("token ids of the texts: %s (%d rows)", path, tokens.meta["row_count"])
    return TextRows(tokens, tok, max_length, built=True)  # the texts read are dropped with ``read``


def texts_at(rows: Iterator[tuple[str, str]], wanted: np.ndarray) -> list[str]:
    """The texts of the (text, label) ``rows`` at the ascending positions ``wanted``, read as a stream: only those
    texts are kept."""
    texts: list[str] = []
    wanted_iter = iter(wanted.tolist())
    target = next(wanted_iter, None)
    for position, (text, _) in enumerate(rows):
        if target is None:
            break
        if position == target:
            texts.append(text)
            target = next(wanted_iter, None)
    if target is not None or len(texts) != len(wanted):
        raise DataError("the data changed since its token file was built (rows are missing); delete the "
                        ".modelforge-tokens folder beside it")
    return texts
