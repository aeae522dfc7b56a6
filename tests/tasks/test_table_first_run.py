"""A table's first run streams it as a record source is streamed: its columns are inferred from its first rows, one
checked pass keeps the labels and the texts are read again as streams. The result is the one the in-memory reading
gave (kept below as the reference), and every problem is the same one-line error."""

import bz2
import csv
import gzip
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from modelforge.core.errors import DataError
from modelforge.data.formats import table_columns, text_corpus, text_table
from modelforge.data.formats.table_columns import ColumnProfile, pick_columns
from modelforge.tasks import baselines
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.text.text_classification import TextClassification

WORDS = "the a film great dull warm clever mess long plot actor scene funny boring fine cast".split()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


def _rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    rows = [(" ".join(rng.choice(WORDS, size=int(rng.integers(2, 25)))) + f" {i}", ("pos", "neg", "meh")[i % 3])
            for i in range(count)]
    rows[5] = ("  ", "pos")  # skipped: empty text
    rows[9] = ("no label here", " ")  # skipped: empty label
    rows[12] = ("a quoted, text\r\nover two lines", "neg")
    rows[20] = (rows[21][0], "meh")  # a duplicate text: one hash, one split
    return rows


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    suffixes = [s for s in path.suffixes if s not in (".gz", ".bz2")]
    if suffixes[-1] == ".jsonl":
        text = "".join(json.dumps({"id": i, "review": t, "sentiment": y}) + "\n" for i, (t, y) in enumerate(rows))
    else:
        buffer = io.StringIO(newline="")
        tsv = suffixes[-1] == ".tsv"
        writer = csv.writer(buffer, delimiter="\t" if tsv else ",", lineterminator="\r\n")
        writer.writerow(["id", "review", "sentiment"])
        writer.writerows((i, t.replace("\r\n", " ") if tsv else t, y) for i, (t, y) in enumerate(rows))
        text = buffer.getvalue()
    data = text.encode("utf-8")
    compress = {".gz": gzip.compress, ".bz2": bz2.compress}.get(path.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(compress(data) if compress else data)
    return path


def _whole_file_columns(path: Path, cfg) -> tuple[str, str]:
    """The columns as inferred before: every row of the table profiled."""
    if cfg.text_column and cfg.label_column:
        return cfg.text_column, cfg.label_column
    columns = table_columns.table_columns(path, cfg.format, cfg.encoding)
    rows = text_table.read_table_rows(path, columns, cfg.format, cfg.encoding)
    profiles = [ColumnProfile(c, len({r.values[c].strip() for r in rows} - {""}),
                              sum(len(r.values[c].split()) for r in rows) / len(rows)) for c in columns]
    return pick_columns(profiles, len(rows), cfg.text_column, cfg.label_column, str(path))


class InMemoryReference(TextClassification):
    """The table read as it was before: whole, into lists, then held out."""

    def _load_files(self):
        cfg = self.data_cfg
        text_column, label_column = _whole_file_columns(Path(cfg.path), cfg)
        own = self._own_files()
        self._resolve(text_column=text_column, label_column=label_column, **{f"{s}_fraction": 0.0 for s in own})

        def read(path, known=None):
            return text_table.read_text_table(Path(path), text_column, label_column, cfg.format, cfg.encoding,
                                              known_labels=known)

        train, name = read(cfg.path), Path(cfg.path).name
        rows = self._held_out_rows(train.texts, train.labels, name, set(own))
        parts = {split: ([train.texts[i] for i in picked], [train.labels[i] for i in picked])
                 for split, picked in rows.items()}
        for split in own:
            table = read(getattr(cfg, f"{split}_path"), train.label_names)
            parts[split], self._origins[split] = (table.texts, table.labels), Path(getattr(cfg, f"{split}_path")).name
            self._source_rows[split] = (split, np.arange(len(table.texts)))
        self._read_what = f"{name} (text column {text_column!r}, label column {label_column!r})"
        return parts, train.label_names


def _task(cls, data):
    recipe = load_recipe({"name": "t", "task": "text_classification",
                          "data": {"source": "file", "max_length": "auto", "max_length_cap": 16, **data},
                          "model": {"name": "rnn_text_classifier", "embed_dim": 8, "hidden_size": 8}})
    return cls(recipe)


def _refuse_whole_reads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the table was read whole")

    for module, name in ((text_table, "read_text_table"), (text_table, "read_table_rows"),
                         (text_table, "read_bytes"), (text_corpus, "read_bytes")):
        monkeypatch.setattr(module, name, refuse)


CASES = {
    "csv-inferred": ("reviews.csv", 150, {}),
    "tsv": ("reviews.tsv", 150, {"text_column": "review"}),
    "jsonl": ("reviews.jsonl", 150, {"val_fraction": 0.2, "test_fraction": 0.0}),
    "csv-gz": ("reviews.csv.gz", 150, {"tokenizer": {"kind": "char"}}),
    "wordpiece": ("reviews.csv", 150, {"tokenizer": {"kind": "wordpiece", "vocab_size": 80}}),  # trained twice alike
    "jsonl-bz2-limit": ("reviews.jsonl.bz2", 150, {"limit": 40}),
    "own-files": ("reviews.csv", 150, {"own": True}),
    "own-test-limit": ("reviews.tsv", 150, {"own": "test", "limit": 25}),
    "past-the-sample": ("reviews.csv", 2300, {"limit": 300}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_tables_first_run_streams_and_gives_what_the_in_memory_reading_gave(tmp_path, monkeypatch, case):
    name, count, data = CASES[case]
    data = dict(data)
    own = data.pop("own", None)
    monkeypatch.setattr(baselines, "MAX_TRAIN", 11)
    runs = {}
    for kind, cls in (("reference", InMemoryReference), ("streamed", TextClassification)):
        folder = tmp_path / kind  # a token file of its own: the second would reuse the first's
        given = {"path": str(_write(folder / name, _rows(count)))}
        for split, seed in (("val", 1), ("test", 2)):
            if own is True or own == split:
                given[f"{split}_path"] = str(_write(folder / f"{split}{Path(name).suffix}", _rows(40, seed)))
        with monkeypatch.context() as patch:
            if kind == "streamed":
                _refuse_whole_reads(patch)
            task = _task(cls, {**given, **data})
            splits = task.datasets()
            baseline = task.baseline_texts
        runs[kind] = (task, splits, baseline)
    (old_task, old, old_baseline), (new_task, new, new_baseline) = runs["reference"], runs["streamed"]
    for split in ("train", "val", "test"):
        a, b = getattr(old, split), getattr(new, split)
        assert (a is None) == (b is None)
        if a is not None:
            assert len(a) == len(b) > 0
            assert all(torch.equal(x, y) for x, y in zip(a.get_batch(range(len(a))), b.get_batch(range(len(b)))))
    assert new.summary == old.summary
    assert new_baseline == old_baseline
    assert new_task.recipe.data.model_dump(exclude={"path", "val_path", "test_path"}) == \
        old_task.recipe.data.model_dump(exclude={"path", "val_path", "test_path"})
    assert new_task.state() == old_task.state()


def _error(call) -> str:
    with pytest.raises(DataError) as caught:
        call()
    return str(caught.value)


PROBLEMS = {
    "undecodable": (".csv", b"review,sentiment\nfine film,pos\nbad \xff byte,neg\n"),
    "undecodable-late": (".csv.gz", b"review,sentiment\n" + b"a fine film \xc3\xa9,pos\n" * 60000 + b"x\xffy,neg\n"),
    "undecodable-cut": (".jsonl", b'{"review": "ok", "sentiment": "pos"}\n{"review": "\xe2\x82'),
    "empty": (".csv", b"\n  \n"),
    "empty-jsonl": (".jsonl", b"\n"),
    "header-only": (".tsv", b"review\tsentiment\n"),
    "no-usable-row": (".csv", b"review,sentiment\n ,pos\nx, \n"),
    "malformed": (".csv", b'review,sentiment\nfine,pos\n"open quote,neg\n'),
    "wrong-fields": (".tsv", b"review\tsentiment\nfine\tpos\nfine\ttab\tneg\n"),
    "bad-json": (".jsonl", b'{"review": "ok", "sentiment": "pos"}\n{"review": \n'),
    "missing-column": (".csv", b"text,sentiment\nfine,pos\n"),
    "truncated-gzip": (".csv.gz", gzip.compress(b"review,sentiment\n" + b"fine,pos\n" * 500)[:-30]),
}


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_the_checked_stream_raises_the_table_readers_one_line_errors(tmp_path, problem):
    suffix, data = PROBLEMS[problem]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data)
    expected = _error(lambda: text_table.read_text_table(path, "review", "sentiment"))
    assert _error(lambda: list(text_table.checked_text_rows(path, "review", "sentiment"))) == expected


def test_unknown_labels_and_skips_are_reported_as_the_table_reader_reports_them(tmp_path, caplog):
    path = tmp_path / "val.csv"
    path.write_bytes(b"review,sentiment\nfine,pos\n ,pos\nx,\nodd one,wow\n")
    expected = _error(lambda: text_table.read_text_table(path, "review", "sentiment", known_labels=["pos", "neg"]))
    assert "line 5: label 'wow' does not occur in the training data" in expected
    assert _error(lambda: list(text_table.checked_text_rows(path, "review", "sentiment",
                                                            known_labels=["pos", "neg"]))) == expected
    path.write_bytes(b"review,sentiment\nfine,pos\n ,pos\nx,\nodd one,neg\n")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        table = text_table.read_text_table(path, "review", "sentiment")
        before, caplog.records[:] = [r.getMessage() for r in caplog.records], []
        rows = list(text_table.checked_text_rows(path, "review", "sentiment"))
    assert rows == list(zip(table.texts, table.labels))
    assert [r.getMessage() for r in caplog.records] == before and len(before) == 2


def test_a_given_test_table_with_a_label_training_never_had_is_the_same_error_in_the_task(tmp_path):
    train = _write(tmp_path / "train.csv", _rows(60))
    test = tmp_path / "test.csv"
    test.write_text("id,review,sentiment\n1,a fine film,pos\n2,an odd film,wow\n")
    data = {"path": str(train), "test_path": str(test), "text_column": "review", "label_column": "sentiment"}
    message = _error(lambda: _task(TextClassification, data).datasets())
    assert message == _error(lambda: text_table.read_text_table(test, "review", "sentiment",
                                                                known_labels=["meh", "neg", "pos"]))


def test_columns_are_inferred_from_the_first_rows_only(tmp_path):
    rows = _rows(table_columns.PROFILE_ROWS + 100)
    path = _write(tmp_path / "reviews.csv", rows)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('9999,"never closed,pos\n')  # a problem past the sample: found by the build pass, not here
    assert table_columns.infer_columns(path, None, None) == ("review", "sentiment")
    message = _error(lambda: _task(TextClassification, {"path": str(path)}).datasets())
    assert message == _error(lambda: text_table.read_text_table(path, "review", "sentiment"))
    assert "malformed CSV" in message


def test_a_label_column_that_only_the_tables_head_makes_look_like_one_is_an_error_not_a_silent_choice(tmp_path):
    rows = _rows(table_columns.PROFILE_ROWS + 600)
    path = tmp_path / "headlines.csv"
    # dates: 80 in the first 2,000 rows (label-like there), 104 over the table (too many for labels)
    path.write_text("headline,date\n" + "".join(f'"{t}",d{i // 25}\n' for i, (t, _) in enumerate(rows)))
    assert "set data.label_column" in _error(lambda: _whole_file_columns(path, _task(
        TextClassification, {"path": str(path)}).data_cfg))  # the whole table did not look labelled before
    assert table_columns.infer_columns(path, None, None) == ("headline", "date")  # its head alone does
    message = _error(lambda: _task(TextClassification, {"path": str(path)}).datasets())
    assert "column 'date' looked like the label in the first 2000 rows, but the whole table has 104" in message


@pytest.mark.parametrize("problem", ["undecodable", "truncated-gzip", "empty"])
def test_inferring_the_columns_of_a_broken_table_gives_the_table_readers_error(tmp_path, problem):
    suffix, data = PROBLEMS[problem]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data)
    expected = _error(lambda: text_table.read_text_table(path, "review", "sentiment"))
    if problem == "empty":  # no header to name the columns: as before, inference says so
        expected = f"{path}: no columns found; expected a header row (CSV/TSV) or JSON objects"
    assert _error(lambda: table_columns.infer_columns(path, None, None)) == expected
