"""Tokenizers: a thin wrapper over Hugging Face ``tokenizers`` with the calls our tasks need.

``Tokenizer.load(path)`` reads any ``tokenizer.json`` (e.g. the MiniLM one); ``train_bpe``, ``train_wordpiece``,
``train_char`` and ``train_word`` build new ones from an iterator of texts. ``encode_batch`` pads and truncates per
call (padding and truncation stored inside a loaded ``tokenizer.json`` are switched off, so results never depend on
how the file was saved); ``save(directory)`` writes ``directory/tokenizer.json`` for the run artifact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _Backend

from modelforge.core.errors import ConfigError, DataError
from modelforge.data import wordpiece_training

FILENAME = "tokenizer.json"
# Tried in order when the file does not configure a pad token.
PAD_CANDIDATES = ("[PAD]", "<pad>", "<|pad|>")


class Tokenizer:
    """Text ↔ token ids. ``pad_id`` is None for tokenizers without a pad token (padding then raises)."""

    def __init__(self, backend: _Backend, pad_token: str | None = None):
        padding = backend.padding
        backend.no_padding()
        backend.no_truncation()
        self.backend = backend
        if pad_token is None:
            pad_token = padding["pad_token"] if padding else next(
                (t for t in PAD_CANDIDATES if backend.token_to_id(t) is not None), None)
        if pad_token is not None and backend.token_to_id(pad_token) is None:
            raise ConfigError(f"pad token {pad_token!r} is not in the vocabulary; add it as a special token")
        self.pad_token = pad_token

    # ---------------------------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Number of ids, special and added tokens included (the size of a model's embedding table)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int | None:
        return None if self.pad_token is None else self.backend.token_to_id(self.pad_token)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    # ---------------------------------------------------------------------------------------------- encoding
    def encode(self, text: str, add_special_tokens: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids of one text; ``max_length`` truncates (special tokens kept)."""
        return self.encode_batch([text], add_special_tokens=add_special_tokens, max_length=max_length,
                                 padding=False, return_tensors=False)["input_ids"][0]

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        padding: bool | str = True,
        return_tensors: bool = True,
    ) -> dict:
        """``{"input_ids", "attention_mask"}`` for a batch, as (batch, time) long tensors or lists of lists.

        ``max_length`` truncates each text (keeping special tokens such as [CLS]/[SEP]). ``padding``: True or
        "longest" pads to the longest text, "max_length" to ``max_length``, False not at all (then tensors need
        equal lengths). Padding is on the right with ``pad_id``; the mask is 1 on real tokens.
        """
        if isinstance(texts, str):
            raise DataError("encode_batch takes a list of texts; use encode() for a single string")
        if max_length is not None:
            self.backend.enable_truncation(max_length)
        try:
            encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        finally:
            self.backend.no_truncation()
        return self.pad([e.ids for e in encodings], padding=padding, max_length=max_length,
                        return_tensors=return_tensors)

    def pad(self, batch: Sequence[Sequence[int]], *, padding: bool | str = True, max_length: int | None = None,
            return_tensors: bool = True) -> dict:
        """Pad already-encoded id lists on the right; same options and result as ``encode_batch``."""
        ids = [list(row) for row in batch]
        target = self._pad_length(ids, padding, max_length)
        if target is not None:
            pad = self._require_pad()
            mask = [[1] * len(row) + [0] * (target - len(row)) for row in ids]
            ids = [row + [pad] * (target - len(row)) for row in ids]
        else:
            mask = [[1] * len(row) for row in ids]
        if not return_tensors:
            return {"input_ids": ids, "attention_mask": mask}
        import torch

        if len({len(row) for row in ids}) > 1:
            raise DataError("texts encode to different lengths; pass padding=True to get tensors")
        return {"input_ids": torch.tensor(ids, dtype=torch.long),
                "attention_mask": torch.tensor(mask, dtype=torch.long)}

    @staticmethod
    def _pad_length(ids: list[list[int]], padding: bool | str, max_length: int | None) -> int | None:
        if padding is False:
            return None
        if padding in (True, "longest"):
            return max((len(row) for row in ids), default=0)
        if padding == "max_length":
            if max_length is None:
                raise ConfigError("padding='max_length' needs max_length=...")
            return max_length
        raise ConfigError(f"unknown padding {padding!r}; valid: True/'longest', 'max_length', False")

    def _require_pad(self) -> int:
        if self.pad_id is None:
            raise ConfigError("this tokenizer has no pad token, so batches cannot be padded; build it with "
                              "Tokenizer(backend, pad_token=...) naming a token of its vocabulary")
        return self.pad_id

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        rows = [[int(i) for i in row] for row in (batch.tolist() if hasattr(batch, "tolist") else batch)]
        return self.backend.decode_batch(rows, skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` into directory ``path`` (or to ``path`` itself if it ends in .json)."""
        path = Path(path)
        file = path if path.suffix == ".json" else path / FILENAME
        file.parent.mkdir(parents=True, exist_ok=True)
        pad = self.pad_id
        if pad is not None:
            # Record the pad token in the file so that load() (and HF's fast tokenizers) find it again.
            self.backend.enable_padding(pad_id=pad, pad_token=self.pad_token)
        try:
            self.backend.save(str(file))
        finally:
            self.backend.no_padding()
        return file

    @classmethod
    def load(cls, path: str | Path, pad_token: str | None = None) -> Tokenizer:
        """Read a ``tokenizer.json`` file, or the one inside directory ``path``."""
        path = Path(path)
        file = path / FILENAME if path.is_dir() else path
        if not file.is_file():
            raise DataError(f"no tokenizer at {file}; pass a tokenizer.json file or a directory that holds one")
        try:
            backend = _Backend.from_file(str(file))
        except Exception as error:  # the Rust side raises plain Exception on malformed JSON
            raise DataError(f"{file} is not a valid tokenizer.json: {error}") from error
        return cls(backend, pad_token)


# ------------------------------------------------------------------------------------------------- trainers


def _require(special_tokens: Sequence[str], needed: Sequence[str], kind: str) -> None:
    for token in needed:
        if token not in special_tokens:
            raise ConfigError(f"{kind} needs {token} among its special tokens, got {list(special_tokens)}")


def _train(backend: _Backend, trainer, texts: Iterable[str]) -> Tokenizer:
    """Train, then wrap; the pad token is the first of ``PAD_CANDIDATES`` among the special tokens, if any."""
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrapped(backend)


def _wrapped(backend: _Backend) -> Tokenizer:
    if backend.get_vocab_size() == 0:
        raise DataError("the tokenizer learned no tokens: the training texts are empty")
    return Tokenizer(backend)


def train_bpe(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
              special_tokens: Sequence[str] = ("<pad>", "<unk>", "<bos>", "<eos>")) -> Tokenizer:
    """Byte-level BPE (GPT-2 style): any text round-trips exactly; no unknown tokens."""
    backend = _Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    return _train(backend, trainer, texts)


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, lowercase: bool = True,
                    special_tokens: Sequence[str] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")) -> Tokenizer:
    """BERT-style WordPiece: BERT normaliser and pre-tokeniser, ``##`` continuations, [CLS] text [SEP]."""
    _require(special_tokens, ("[UNK]", "[CLS]", "[SEP]"), "WordPiece")
    backend = _Backend(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    # the library's WordPiece trainer alone differs from run to run: see data/wordpiece_training.py
    backend = wordpiece_training.train_wordpiece(backend, texts, list(special_tokens), vocab_size=vocab_size,
                                                 min_frequency=min_frequency, show_progress=False)
    tokenizer = _wrapped(backend)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer


def train_char(texts: Iterable[str], special_tokens: Sequence[str] = ("<pad>", "<unk>"),
               max_vocab: int = 100_000) -> Tokenizer:
    """One token per character (spaces and newlines included): the char-level models' vocabulary."""
    _require(special_tokens, ("<unk>",), "a char-level tokenizer")
    backend = _Backend(models.WordLevel(unk_token="<unk>"))
    # Every character is its own piece; [\\s\\S] also matches newlines.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join characters back without separators
    trainer = trainers.WordLevelTrainer(vocab_size=max_vocab, min_frequency=1, special_tokens=list(special_tokens),
                                        show_progress=False)
    return _train(backend, trainer, texts)


def train_word(texts: Iterable[str], vocab_size: int = 30000, min_frequency: int = 1, lowercase: bool = True,
               special_tokens: Sequence[str] = ("<pad>", "<unk>", "<bos>", "<eos>")) -> Tokenizer:
    """Word-level: words and punctuation runs become tokens; rare words beyond ``vocab_size`` map to <unk>.

    Decoding joins tokens with single spaces, so the original spacing is not restored.
    """
    _require(special_tokens, ("<unk>",), "a word-level tokenizer")
    backend = _Backend(models.WordLevel(unk_token="<unk>"))
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(special_tokens), show_progress=False)
    return _train(backend, trainer, texts)
