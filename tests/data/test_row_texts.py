"""Texts stored beside a row token file (``keep_texts``): each row comes back exactly as written — any Unicode, empty
texts, lone surrogates — read like a list, pickled as paths, and a short or missing text file is never trusted."""

import pickle

import pytest

from modelforge.data.row_tokens import TextRows, open_row_tokens, text_paths, write_rows

SOURCES = ["Go.", "", "¡Corre! ünïcode", "emoji 🙂 and\ttab", "lone \udcff surrogate", "x" * 5000]
TARGETS = ["Ve.", "vacío", "🙂"]


def _encode(texts: list[str]) -> tuple[list[list[int]], int]:
    return [[len(text) % 7 + 1] for text in texts], 0


def _write(tmp_path, keep_texts=True):
    path = tmp_path / "k.tokens"
    columns = {"train/source": (SOURCES, _encode), "train/target": (TARGETS, _encode)}
    return write_rows(path, 100, columns, {}, keep_texts=keep_texts)


def test_rows_come_back_as_written_and_read_like_a_list(tmp_path):
    tokens = _write(tmp_path)
    sources, targets = TextRows(tokens, "train/source"), TextRows(tokens, "train/target")
    assert len(sources) == len(SOURCES) and list(sources) == SOURCES and sources == SOURCES
    assert list(targets) == TARGETS and targets != SOURCES
    assert sources[2] == SOURCES[2] and sources[-1] == SOURCES[-1] and sources[1:4] == SOURCES[1:4]
    assert sources[::-2] == SOURCES[::-2] and sources.take([4, 0, 4]) == [SOURCES[4], SOURCES[0], SOURCES[4]]
    assert "🙂" in targets and targets.index("🙂") == 2
    picked = sources.subset([5, 2, 0])
    assert list(picked) == [SOURCES[5], SOURCES[2], SOURCES[0]] and list(picked.subset([1])) == [SOURCES[2]]
    with pytest.raises(IndexError):
        sources[len(SOURCES)]


def test_text_rows_pickle_as_paths(tmp_path):
    tokens = _write(tmp_path)
    rows = TextRows(tokens, "train/source")
    assert rows[5] == SOURCES[5]  # mapped now; the pickle must still leave the map behind
    data = pickle.dumps(rows)
    assert len(data) < 2000 and b"xxxxx" not in data
    copy = pickle.loads(data)
    assert copy.data._array is None and list(copy) == SOURCES


def test_a_short_or_missing_text_file_is_not_trusted(tmp_path):
    tokens = _write(tmp_path)
    data, offsets = text_paths(tokens.path)
    assert open_row_tokens(tokens.path) is not None
    data.write_bytes(data.read_bytes()[:-1])
    assert open_row_tokens(tokens.path) is None
    _write(tmp_path)
    offsets.unlink()
    assert open_row_tokens(tokens.path) is None


def test_without_keep_texts_nothing_is_stored(tmp_path):
    tokens = _write(tmp_path, keep_texts=False)
    assert "texts" not in tokens.meta and not any(p.exists() for p in text_paths(tokens.path))


def test_a_failed_build_leaves_no_files(tmp_path):
    def fail(texts):
        raise RuntimeError("encoder broke")

    with pytest.raises(RuntimeError):
        write_rows(tmp_path / "k.tokens", 100, {"a": (SOURCES, _encode), "b": (TARGETS, fail)}, {}, keep_texts=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
