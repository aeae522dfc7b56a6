import bz2
import csv
import gzip
import json
import logging

import pytest

from modelforge.core.errors import DataError
from modelforge.data.formats.parallel_text import read_parallel, read_parallel_files, read_parallel_tsv
from modelforge.data.formats.text_corpus import read_text_corpus
from modelforge.data.formats.text_table import read_text_table

ROWS = [
    ("A fine, funny film.", "pos"),
    ('He said "wow"\nthen left', "neg"),
    ("Naïve café — ok", "neutral"),
    ("Another one", "pos"),
]


def _write_csv(path, rows, header=("text", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- text tables -------------------------------------------------------------------------------------------------


def test_csv_round_trip_keeps_commas_quotes_newlines_and_multiclass_labels(tmp_path):
    table = read_text_table(_write_csv(tmp_path / "reviews.csv", ROWS))
    assert table.texts == [t for t, _ in ROWS]
    assert table.labels == [label for _, label in ROWS]
    assert table.label_names == ["neg", "neutral", "pos"]
    assert table.label_ids() == [2, 0, 1, 2]
    assert table.lines == [2, 3, 5, 6], "a quoted newline makes row 2 span lines 3-4"
    assert table.skipped_empty_text == 0


def test_custom_columns_tsv_and_jsonl_round_trips(tmp_path):
    tsv = tmp_path / "data.tsv"
    tsv.write_text('id\tsentence\ttopic\n1\tPrices "soar" again\tbusiness\n2\tNew phone\ttech\n', encoding="utf-8")
    table = read_text_table(tsv, text_column="sentence", label_column="topic")
    assert table.texts == ['Prices "soar" again', "New phone"], "TSV fields are not quoted: quotes are kept"
    assert table.label_names == ["business", "tech"]

    jsonl = tmp_path / "data.jsonl"
    records = [{"body": "one", "y": 1}, {"body": "two", "y": "cat"}, {"body": "three", "y": 1, "extra": [1]}]
    jsonl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    table = read_text_table(jsonl, text_column="body", label_column="y")
    assert table.texts == ["one", "two", "three"]
    assert table.labels == ["1", "cat", "1"]
    assert table.label_ids(["cat", "1"]) == [1, 0, 1]


def test_compressed_tables_and_text_only_reading(tmp_path):
    plain = _write_csv(tmp_path / "r.csv", ROWS).read_bytes()
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(plain))
    (tmp_path / "r.csv.bz2").write_bytes(bz2.compress(plain))
    assert read_text_table(tmp_path / "r.csv.gz").texts == read_text_table(tmp_path / "r.csv.bz2").texts
    texts_only = read_text_table(tmp_path / "r.csv", label_column=None)
    assert texts_only.labels is None and len(texts_only) == 4
    with pytest.raises(DataError, match="without a label column"):
        texts_only.label_ids()


def test_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftext,label\nhello,a\n".encode())
    assert read_text_table(path).texts == ["hello"]


def test_empty_texts_and_labels_are_counted_warnings(tmp_path, caplog):
    path = _write_csv(tmp_path / "gaps.csv", [("good", "a"), ("   ", "b"), ("", "a"), ("fine", ""), ("ok", "b")])
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        table = read_text_table(path)
    assert table.texts == ["good", "ok"]
    assert (table.skipped_empty_text, table.skipped_empty_label) == (2, 1)
    assert "skipped 2 row(s) with empty text (lines 3, 4)" in caplog.text
    assert "skipped 1 row(s) with empty label" in caplog.text


def test_missing_column_names_the_file_and_the_columns_present(tmp_path):
    path = _write_csv(tmp_path / "cols.csv", [("x", "y")], header=("review", "sentiment"))
    with pytest.raises(DataError) as err:
        read_text_table(path, text_column="review", label_column="sentimnet")
    message = str(err.value)
    assert str(path) in message and "'sentimnet'" in message
    assert "columns present: 'review', 'sentiment'" in message and "did you mean 'sentiment'" in message
    assert "\n" not in message

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"rows\.jsonl line 2: no column 'label'.*columns present: 'text'"):
        read_text_table(jsonl)


def test_undecodable_bytes_name_the_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 au lait,a\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.csv: byte 14 \(line 2\) is not valid utf-8.*encoding='latin-1'"):
        read_text_table(path)
    assert read_text_table(path, encoding="latin-1").texts == ["café au lait"]
    with pytest.raises(DataError, match="unknown text encoding 'klingon'"):
        read_text_table(path, encoding="klingon")


def test_label_seen_only_in_test_is_an_error_or_a_counted_skip(tmp_path, caplog):
    train = read_text_table(_write_csv(tmp_path / "train.csv", [("a", "pos"), ("b", "neg")]))
    test_path = _write_csv(tmp_path / "test.csv", [("c", "pos"), ("d", "meh"), ("e", "neg")])
    with pytest.raises(DataError, match=r"test\.csv: line 3: label 'meh' does not occur in the training data"):
        read_text_table(test_path, known_labels=train.label_names)
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        test = read_text_table(test_path, known_labels=train.label_names, unknown_labels="skip")
    assert test.texts == ["c", "e"] and test.skipped_unknown_label == 1
    assert test.label_ids(train.label_names) == [1, 0]
    assert "label not in the training labels" in caplog.text


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", b"", "file is empty"),
        ("blank.jsonl", b"\n  \n", "file is empty"),
        ("header.csv", b"text,label\n", "has a header but no data rows"),
        ("ragged.csv", b"text,label\nok,a\nthis, has, commas,b\n", "line 3 has 4 fields but the header has 2"),
        ("tab.tsv", b"text\tlabel\nok\ta\nbad\ttab\tb\n", "line 3 has 3 fields"),
        ("quote.csv", b'text,label\n"open quote,a\n', "malformed CSV"),
        ("bad.jsonl", b'{"text": "a", "label": "b"}\n{"text": oops}\n', "line 2 is not valid JSON"),
        ("list.jsonl", b'["a", "b"]\n', "line 1 is a JSON list, expected an object"),
        ("nested.jsonl", b'{"text": {"a": 1}, "label": "b"}\n', "field 'text' is a dict, expected text"),
        ("allempty.csv", b"text,label\n ,a\n", "no usable rows"),
        ("notes.txt", b"text,label\na,b\n", "cannot tell the table format"),
    ],
)
def test_bad_tables_fail_with_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_text_table(path)
    assert message in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_text_table(tmp_path / "nope.csv")


# --- parallel text -----------------------------------------------------------------------------------------------


def test_parallel_tsv_round_trip_and_tatoeba_layout(tmp_path, caplog):
    pairs = [("Hello.", "Hola."), ('She said "yes".', 'Ella dijo "sí".'), ("Good night", "Buenas noches")]
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs[:2]) + "\n" + f"{pairs[2][0]}\t{pairs[2][1]}\r\n")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        text = read_parallel(path)
    assert text.pairs() == pairs and text.lines == [1, 2, 4] and text.skipped_blank == 1
    assert "skipped 1 blank line" in caplog.text

    tatoeba = tmp_path / "spa.txt"
    tatoeba.write_text("Go.\tVe.\tCC-BY 2.0 #1\nRun!\t¡Corre!\tCC-BY 2.0 #2\n", encoding="utf-8")
    text = read_parallel_tsv(tatoeba, num_columns=3)
    assert text.sources == ["Go.", "Run!"] and text.targets == ["Ve.", "¡Corre!"]
    flipped = read_parallel_tsv(tatoeba, source_column=1, target_column=0, num_columns=3)
    assert flipped.sources == ["Ve.", "¡Corre!"]


def test_parallel_tsv_bad_row_names_its_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\nno tab here\nc\td\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv: line 2 has 1 tab-separated field\(s\), expected 2"):
        read_parallel_tsv(path)
    path.write_text("a\tb\tc\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1 has 3 tab-separated"):
        read_parallel_tsv(path)
    with pytest.raises(DataError, match="two different columns"):
        read_parallel_tsv(path, source_column=0, target_column=0, num_columns=3)


def test_parallel_files_wmt_layout_and_empty_sides(tmp_path, caplog):
    (tmp_path / "train.en").write_text("one\ntwo\n\nfour\n", encoding="utf-8")
    (tmp_path / "train.es").write_text("uno\ndos\ntres\ncuatro\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        text = read_parallel(tmp_path / "train", "en", "es")
    assert text.pairs() == [("one", "uno"), ("two", "dos"), ("four", "cuatro")]
    assert text.skipped_empty_side == 1 and text.lines == [1, 2, 4]
    assert "skipped 1 pair(s) with an empty side (lines 3)" in caplog.text
    assert text.subset([2]).pairs() == [("four", "cuatro")]


def test_parallel_files_with_different_line_counts_name_both_files_and_counts(tmp_path):
    source, target = tmp_path / "dev.en", tmp_path / "dev.es"
    source.write_text("a\nb\nc\n", encoding="utf-8")
    target.write_text("x\ny\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_parallel_files(source, target)
    message = str(err.value)
    assert f"{source} has 3 lines but {target} has 2" in message and "\n" not in message
    with pytest.raises(DataError, match="both source_lang and target_lang"):
        read_parallel(tmp_path / "dev", "en")


def test_parallel_empty_and_undecodable_files(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no sentence pairs"):
        read_parallel_tsv(empty)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes("ni\xf1o\tchild\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.tsv: byte 2 \(line 1\)"):
        read_parallel_tsv(latin)
    assert read_parallel_tsv(latin, encoding="latin-1").sources == ["niño"]


# --- plain-text corpora ------------------------------------------------------------------------------------------


def test_corpus_from_file_list_and_directory_in_sorted_order(tmp_path, caplog):
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    (root / "b" / "z.txt").write_text("zeta\r\nline two\r\n", encoding="utf-8")
    (root / "a.txt").write_text("alpha\n", encoding="utf-8")
    (root / "c.txt").write_text("  \n", encoding="utf-8")
    (root / "notes.md").write_text("ignored", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        corpus = read_text_corpus(root)
    assert [p.name for p in corpus.paths] == ["a.txt", "z.txt"], "sorted by relative path: a.txt < b/z.txt < c.txt"
    assert corpus.documents == ["alpha\n", "zeta\nline two\n"], "CRLF normalised"
    assert corpus.skipped_empty == 1 and "skipped 1 empty corpus file" in caplog.text
    assert corpus.join("") == "alpha\nzeta\nline two\n"
    single = read_text_corpus(root / "a.txt")
    assert single.documents == ["alpha\n"]
    listed = read_text_corpus([root / "b" / "z.txt", root / "a.txt"])
    assert [p.name for p in listed.paths] == ["z.txt", "a.txt"], "an explicit list keeps its order"
    assert len(read_text_corpus(root, pattern="*.md")) == 1


def test_corpus_encodings_and_errors(tmp_path):
    path = tmp_path / "old.txt"
    path.write_bytes("Gro\xdfe Stra\xdfe\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"old\.txt: byte 3 \(line 1\) is not valid utf-8"):
        read_text_corpus(path)
    assert read_text_corpus(path, encoding="latin-1").documents == ["Große Straße\n"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files matching"):
        read_text_corpus(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        read_text_corpus(tmp_path / "missing.txt")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "x.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="every file is empty"):
        read_text_corpus(tmp_path / "blank")


def test_a_corrupt_gzip_body_is_one_line_naming_the_file(tmp_path):
    """gzip raises zlib.error (not an OSError) for a damaged deflate stream behind a valid header."""
    from modelforge.data.formats.corpus_stream import corpus_blocks
    from modelforge.data.formats.text_table import stream_text_rows

    data = bytearray(gzip.compress(("text,label\n" + "a fine review,pos\n" * 400).encode()))
    data[20:60] = bytes(range(40))  # the header stays, the deflate blocks do not
    for name in ("reviews.csv.gz", "corpus.txt.gz"):
        (tmp_path / name).write_bytes(bytes(data))
    readers = [lambda: read_text_table(tmp_path / "reviews.csv.gz"),
               lambda: read_text_corpus(tmp_path / "corpus.txt.gz"),
               lambda: list(stream_text_rows(tmp_path / "reviews.csv.gz", "text", "label")),
               lambda: list(corpus_blocks([tmp_path / "corpus.txt.gz"]))]
    for read in readers:
        with pytest.raises(DataError, match=r"\.gz: ") as caught:
            read()
        assert "\n" not in str(caught.value)
