"""Token files and the streamed corpus they are built from: the stream is the in-memory corpus, block by block; the
files are memory-mapped, typed by vocabulary size, written atomically, and placed beside the data when they can be."""

import gzip
import pickle

import numpy as np
import pytest

from modelforge.data.formats import corpus_stream
from modelforge.data.formats.corpus_stream import corpus_blocks, count_characters, limited, split_at
from modelforge.data.formats.text_corpus import corpus_files, read_text_corpus
from modelforge.data.token_file import (
    FOLDER,
    TokenWriter,
    encode_to_file,
    line_batches,
    open_token_file,
    token_dtype,
    token_folder,
)

TEXTS = {
    "a.txt": "\ufeffFirst line\r\nsecond line\rthird\n\n\nfourth ü line\n",
    "b.txt": "   \n\t\n",  # whitespace only: skipped
    "c.txt.gz": "gzipped text\nwith two lines",
    "d.txt": "é" * 50 + "\n" + "last",
}


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in TEXTS.items():
        data = text.encode("utf-8")
        (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return folder


def test_the_stream_is_the_in_memory_corpus_at_any_block_size(corpus, monkeypatch):
    expected = read_text_corpus(corpus, pattern="*.txt*").join()
    files = corpus_files(corpus, "*.txt*")
    for block in (1, 3, 7, 1 << 20):  # 1 byte: multi-byte characters, BOM and \r\n all cross block edges
        monkeypatch.setattr(corpus_stream, "BLOCK_BYTES", block)
        skipped = []
        assert "".join(corpus_blocks(files, skipped=skipped)) == expected
        assert [p.name for p in skipped] == ["b.txt"]
    assert count_characters(files)[0] == len(expected)
    assert "".join(limited(corpus_blocks(files), 20)) == expected[:20]


def test_split_pieces_and_line_batches_cut_like_the_in_memory_split():
    import re

    text = "".join(f"line {i}\n" + "\n" * (i % 3) for i in range(200))
    ends = {"train": 700, "val": 1000, "test": len(text)}
    blocks = [text[i : i + 13] for i in range(0, len(text), 13)]
    pieces = list(split_at(iter(blocks), ends))
    parts = {"train": text[:700], "val": text[700:1000], "test": text[1000:]}
    assert {name: "".join(t for n, t in pieces if n == name) for name in parts} == parts
    chunk = re.compile(r"[^\n]*(?:\n+|$)")
    for batch_chars in (1, 50, 10**6):
        lines = {}
        for split, batch, size in line_batches(iter(pieces), batch_chars):
            assert size == sum(map(len, batch))
            lines.setdefault(split, []).extend(batch)
        assert lines == {name: [c for c in chunk.findall(part) if c] for name, part in parts.items()}


def test_vocabulary_size_picks_the_narrowest_dtype():
    assert token_dtype(300) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_a_token_file_is_memory_mapped_and_its_spans_pickle_without_their_ids(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"a": 0, "b": 1, "\n": 2, "[UNK]": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    writer = TokenWriter(tmp_path / "k.tokens", vocab_size=4)
    ranges, _ = encode_to_file(tokenizer, [("train", "ab\nba\n" * 1000), ("val", "aab\n")], writer, 6004)
    token_file = writer.commit({"splits": ranges, "characters": {}})
    opened = open_token_file(tmp_path / "k.tokens")
    assert opened.meta == token_file.meta and opened.meta["dtype"] == "<u2" and opened.meta["tokens"] == 6004
    train, val = opened.split("train"), opened.split("val")
    assert isinstance(train.array, np.memmap) and np.asarray(val).tolist() == [0, 0, 1, 2]
    assert train[3:6].tolist() == [1, 0, 2] and train[np.array([[0, 1], [4, 5]])].tolist() == [[0, 1], [0, 2]]
    assert len(pickle.dumps(train)) < 1000  # a DataLoader worker maps the file again instead of receiving a copy
    assert pickle.loads(pickle.dumps(val))[1:].tolist() == [0, 1, 2]


def test_an_unfinished_token_file_is_never_trusted_or_left_behind(tmp_path):
    writer = TokenWriter(tmp_path / "k.tokens", vocab_size=10)
    writer.write([1, 2, 3])
    writer.discard()  # what a failed build does
    assert list(tmp_path.iterdir()) == []
    writer = TokenWriter(tmp_path / "k.tokens", vocab_size=10)
    writer.write([1, 2, 3])
    writer.commit({"splits": {"train": [0, 3]}})
    assert open_token_file(tmp_path / "k.tokens") is not None
    (tmp_path / "k.tokens").write_bytes(b"\0\0")  # shorter than the sidecar says (e.g. a copy cut short)
    assert open_token_file(tmp_path / "k.tokens") is None
    (tmp_path / "k.json").unlink()  # killed between the two renames: no sidecar
    assert open_token_file(tmp_path / "k.tokens") is None


def test_token_files_go_beside_the_data_or_to_the_cache_when_it_is_read_only(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "c.txt").write_text("text")
    assert token_folder(data / "c.txt") == data / FOLDER == token_folder(data)
    # a read-only folder (a mounted dataset); os.access is what tells, since root may write even into 0555 folders
    monkeypatch.setattr("modelforge.data.token_file.os.access", lambda path, mode: False)
    assert token_folder(data / "c.txt") == tmp_path / "cache" / "token_files"


def test_a_folder_corpus_never_reads_the_token_files_kept_in_it(corpus):
    (corpus / FOLDER).mkdir()
    (corpus / FOLDER / "key.tokens").write_bytes(b"\x01\x00" * 10)
    assert all(FOLDER not in p.parts for p in corpus_files(corpus, "*"))
