"""A run whose row token file exists reads no rows of the table or record source: labels, class names, split sizes,
origins and inferred columns come from the file; the TF-IDF baseline's few texts are read again as a stream, and
only when the baseline asks for them."""

import bz2
import csv
import io
import json

import datasets
import numpy as np
import pytest
import torch

from modelforge.core.errors import DataError
from modelforge.data.formats import records, table_columns, text_table
from modelforge.tasks import baselines
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.text import text_rows
from modelforge.tasks.text.text_classification import TextClassification

WORDS = "the a film great dull warm clever mess long plot actor scene funny boring fine cast".split()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


def _rows(count: int = 120, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = [(" ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))) + f" {i}", ("pos", "neg", "meh")[i % 3])
            for i in range(count)]
    rows[7] = ("   ", "pos")  # skipped (empty text): places in the source count only the rows kept
    rows[11] = ("a quoted, text\r\nover two lines", "neg")
    return rows


def _csv(path, rows):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["id", "review", "sentiment"])
    writer.writerows((i, text, label) for i, (text, label) in enumerate(rows))
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(bz2.compress(data) if path.suffix == ".bz2" else data)
    return path


def _task(data):
    recipe = load_recipe({"name": "t", "task": "text_classification",
                          "data": {"source": "file", "max_length": 12, **data},
                          "model": {"name": "rnn_text_classifier", "embed_dim": 8, "hidden_size": 8}})
    return TextClassification(recipe)


def _refuse_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the rows were read")

    for module, name in ((text_table, "read_text_table"), (text_table, "read_table_rows"),
                         (table_columns, "infer_columns"), (table_columns, "profile_columns"),
                         (records.Records, "rows"), (text_rows, "write_row_tokens")):
        monkeypatch.setattr(module, name, refuse)


def _same_splits(first, second):
    for split in ("train", "val", "test"):
        a, b = getattr(first, split), getattr(second, split)
        assert len(a) == len(b)
        assert all(torch.equal(x, y) for x, y in zip(a.get_batch(range(len(a))), b.get_batch(range(len(b)))))
    assert second.summary == first.summary


@pytest.mark.parametrize("data", [
    {},  # columns inferred, val and test held out of the one file
    {"limit": 40, "text_column": "review", "label_column": "sentiment"},
    {"own": True},  # val and test given as files of their own
], ids=["inferred", "limit", "own-files"])
def test_a_second_run_reads_no_row_and_gives_the_same_splits_found_line_and_baseline(tmp_path, monkeypatch, data):
    data = dict(data)
    path = _csv(tmp_path / "reviews.csv.bz2", _rows())
    if data.pop("own", False):
        data.update(val_path=str(_csv(tmp_path / "val.csv", _rows(30, seed=1))),
                    test_path=str(_csv(tmp_path / "test.csv", _rows(36, seed=2))))
    monkeypatch.setattr(baselines, "MAX_TRAIN", 9)  # the baseline reads a spread of rows, not all of them
    first_task = _task({"path": str(path), **data})
    first = first_task.datasets()
    expected = {split: list(texts) for split, texts in first_task.baseline_texts.items()}
    assert all(len(texts) == 9 for texts in expected.values())

    _refuse_reading(monkeypatch)
    streamed = []
    real_stream = text_table.stream_text_rows
    monkeypatch.setattr(text_table, "stream_text_rows", lambda *a, **k: streamed.append(a[0]) or real_stream(*a, **k))
    task = _task({"path": str(path), **data})
    second = task.datasets()
    _same_splits(first, second)
    assert task.recipe.data == first_task.recipe.data  # the inferred columns and fractions, as the first run had
    assert not streamed  # nothing read until the baseline asks
    assert task.baseline_texts == expected
    assert len(streamed) == (3 if "val_path" in data else 1)  # each source file streamed once
    result = baselines.run_baseline(task, second)
    assert result["train_rows"] == 9 and result["test_rows"] == 9


@pytest.mark.parametrize("name", ["t.csv", "t.csv.bz2", "t.tsv", "t.jsonl"])
def test_the_stream_keeps_the_rows_the_table_reader_keeps(tmp_path, name):
    rows = _rows(40)
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps({"review": t, "sentiment": y}) for t, y in rows) + "\n")
    elif name.endswith(".tsv"):
        path.write_text("review\tsentiment\r\n" + "".join(f"{t.replace(chr(13) + chr(10), ' ')}\t{y}\r\n"
                                                        for t, y in rows))
    else:
        _csv(path, rows)
    table = text_table.read_text_table(path, "review", "sentiment")
    assert list(text_table.stream_text_rows(path, "review", "sentiment")) == list(zip(table.texts, table.labels))
    assert len(table.texts) == 39


def test_an_edited_source_behind_an_unchanged_key_is_a_one_line_error(tmp_path, monkeypatch):
    path = _csv(tmp_path / "reviews.csv", _rows())
    first = _task({"path": str(path)})
    first.datasets()
    _refuse_reading(monkeypatch)
    task = _task({"path": str(path)})
    task.datasets()
    monkeypatch.setattr(text_table, "stream_text_rows", lambda *a, **k: iter([("one", "pos")]))
    with pytest.raises(DataError, match="changed since its token file was built"):
        _ = task.baseline_texts


def test_a_token_file_of_an_older_layout_is_rebuilt(tmp_path):
    path = _csv(tmp_path / "reviews.csv", _rows())
    _task({"path": str(path)}).datasets()
    tokens = next((tmp_path / ".modelforge-tokens").glob("*.tokens"))
    tokens.with_suffix(".sources").unlink()  # as a file written before labels and sources were kept
    task = _task({"path": str(path)})
    task.datasets()
    assert task._rows.built and tokens.with_suffix(".sources").is_file()
    meta = json.loads(tokens.with_suffix(".json").read_text())
    assert meta["classes"] == ["meh", "neg", "pos"] and meta["used"]["text_column"] == "review"


def test_a_saved_dataset_is_not_read_again_by_the_second_run(tmp_path, monkeypatch):
    rows = _rows(80)
    rows[7] = ("fine film", "pos")  # a record source skips only empty texts; keep every row here
    train = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
    path = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "validation": train.select(range(0, 80, 5))}).save_to_disk(str(path))
    monkeypatch.setattr(baselines, "MAX_TRAIN", 7)
    first_task = _task({"path": str(path), "val_min": 0})
    first = first_task.datasets()
    expected = first_task.baseline_texts
    real_rows = records.Records.rows
    _refuse_reading(monkeypatch)
    task = _task({"path": str(path), "val_min": 0})
    second = task.datasets()
    _same_splits(first, second)
    monkeypatch.setattr(records.Records, "rows", real_rows)
    assert task.baseline_texts == expected and set(expected) == {"train", "test", "val"}


def test_a_record_source_is_tokenized_as_a_stream_into_the_same_rows_as_its_table(tmp_path, monkeypatch):
    from modelforge.data import row_tokens
    from modelforge.tasks.text import record_texts

    rows = [(text, label) for text, label in _rows(300) if text.strip()]
    train = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]})
    datasets.DatasetDict({"train": train}).save_to_disk(str(tmp_path / "saved"))
    table = tmp_path / "table"
    table.mkdir()
    _csv(table / "reviews.csv", rows)
    monkeypatch.setattr(row_tokens, "BATCH_ROWS", 16)
    out, encoded = [0], []  # texts handed out by the streams; at each batch, how many were out unencoded
    real_iter, real_encode = record_texts.SourceTexts.__iter__, row_tokens.encode_rows

    def counted(self):
        for text in real_iter(self):
            out[0] += 1
            yield text

    def encode(tok, texts, **kwargs):
        encoded.append((len(texts), out[0] - sum(n for n, _ in encoded)))
        return real_encode(tok, texts, **kwargs)

    def write(*args, **kwargs):
        out[0] = 0  # the tokenizer's training pass read the training texts already
        return real_write(*args, **kwargs)

    real_write = text_rows.write_row_tokens
    monkeypatch.setattr(record_texts.SourceTexts, "__iter__", counted)
    monkeypatch.setattr(row_tokens, "encode_rows", encode)
    monkeypatch.setattr(text_rows, "write_row_tokens", write)
    streamed = _task({"path": str(tmp_path / "saved"), "text_column": "text", "label_column": "label"}).datasets()
    assert sum(n for n, _ in encoded) == len(rows) and len(encoded) >= len(rows) // 16
    assert all(size <= 16 and unencoded == size for size, unencoded in encoded)  # one batch out at a time
    monkeypatch.undo()
    read = _task({"path": str(table / "reviews.csv"), "text_column": "review", "label_column": "sentiment"})
    listed = read.datasets()
    for split in ("train", "val", "test"):
        a, b = getattr(streamed, split), getattr(listed, split)
        assert len(a) == len(b) > 0
        assert all(torch.equal(x, y) for x, y in zip(a.get_batch(range(len(a))), b.get_batch(range(len(b)))))


def test_a_loaded_runs_recipe_with_the_resolved_settings_finds_the_file_without_reading(tmp_path, monkeypatch):
    path = _csv(tmp_path / "reviews.csv", _rows())
    first_task = _task({"path": str(path), "max_length": "auto", "max_length_cap": 16})
    first = first_task.datasets()
    saved = first_task.recipe  # what recipe.yaml says: the columns inferred, max_length computed
    assert saved.data.text_column == "review" and isinstance(saved.data.max_length, int)
    _refuse_reading(monkeypatch)
    monkeypatch.setattr(text_rows, "build_tokenizer", lambda *a, **k: pytest.fail("tokenized again"))
    task = TextClassification(saved)
    _same_splits(first, task.datasets())
    assert len(list((tmp_path / ".modelforge-tokens").glob("*.tokens"))) == 1
