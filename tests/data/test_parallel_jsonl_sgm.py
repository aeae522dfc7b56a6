"""Parallel text as JSONL pairs and as WMT .sgm source/reference files."""

import json

import pytest

from modelforge.core.errors import DataError
from modelforge.data.formats.parallel_text import read_parallel, read_parallel_jsonl, read_parallel_sgm


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_infers_the_two_string_fields_in_written_order(tmp_path):
    rows = [{"en": "hello", "es": "hola", "id": 1}, {"en": "cat", "es": "gato", "id": 2}]
    path = _jsonl(tmp_path / "pairs.jsonl", rows)
    text = read_parallel(path)
    assert text.pairs() == [("hello", "hola"), ("cat", "gato")]
    assert text.lines == [1, 2]


def test_jsonl_named_fields_and_one_named_field_picks_the_other(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"doc": "long text", "summary": "short", "lang": "en"}])
    assert read_parallel(path, source_field="doc", target_field="summary").pairs() == [("long text", "short")]
    assert read_parallel_jsonl(path, target_field="lang", source_field="summary").pairs() == [("short", "en")]


def test_jsonl_ambiguous_fields_list_them(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"a": "x", "b": "y", "c": "z"}])
    with pytest.raises(DataError, match=r"p.jsonl: line 1 has string fields \['a', 'b', 'c'\].*source_field"):
        read_parallel(path)


@pytest.mark.parametrize("line, message", [
    ('{"en": "a", "es": "b"}\n{"en": "c"\n', "line 2 is not JSON"),
    ('{"en": "a", "es": "b"}\n["c", "d"]\n', "line 2 is a JSON list"),
    ('{"en": "a", "es": "b"}\n{"en": "c", "fr": "d"}\n', "line 2 has no field 'es'"),
    ('{"en": "a", "es": "b"}\n{"en": "c", "es": 3}\n', "line 2 field 'es' is a int"),
])
def test_jsonl_bad_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line, encoding="utf-8")
    with pytest.raises(DataError, match=f"bad.jsonl: {message}"):
        read_parallel(path)


def _sgm(path, docs):
    body = "".join(f'<doc sysid="ref" docid="{doc}" genre="news">\n'
                   + "".join(f'<seg id="{i}">{text}</seg>\n' for i, text in segs) + "</doc>\n"
                   for doc, segs in docs)
    path.write_text(f'<refset setid="t" srclang="any">\n{body}</refset>\n', encoding="utf-8")
    return path


def test_sgm_pairs_by_document_and_segment_id_not_by_line(tmp_path):
    src = _sgm(tmp_path / "newstest-deen-src.de.sgm", [("d1", [(1, "Hallo &amp; gut"), (2, "Katze")]),
                                                         ("d2", [(1, "Hund")])])
    ref = _sgm(tmp_path / "newstest-deen-ref.en.sgm", [("d2", [(1, "dog")]), ("d1", [(2, "cat"), (1, "hello & good")])])
    text = read_parallel(tmp_path / "newstest-deen", "de", "en")
    assert text.pairs() == [("Hallo & gut", "hello & good"), ("Katze", "cat"), ("Hund", "dog")]
    assert text.paths == (src, ref)


def test_sgm_segment_without_partner_names_file_and_line(tmp_path):
    src = _sgm(tmp_path / "s.sgm", [("d1", [(1, "a"), (2, "b")])])
    ref = _sgm(tmp_path / "r.sgm", [("d1", [(1, "x")])])
    with pytest.raises(DataError, match=r"s.sgm: line 4 segment 2 of document 'd1' has no reference"):
        read_parallel_sgm(src, ref)
    extra = _sgm(tmp_path / "x.sgm", [("d1", [(1, "x"), (2, "y"), (3, "z")])])
    with pytest.raises(DataError, match=r"x.sgm: line 5 segment 3 of document 'd1' has no source"):
        read_parallel_sgm(src, extra)


def test_sgm_without_segments_or_with_a_broken_one_is_an_error(tmp_path):
    empty = tmp_path / "e.sgm"
    empty.write_text("<refset>\n</refset>\n", encoding="utf-8")
    good = _sgm(tmp_path / "g.sgm", [("d", [(1, "a")])])
    with pytest.raises(DataError, match="e.sgm: no <seg"):
        read_parallel_sgm(empty, good)
    broken = tmp_path / "b.sgm"
    broken.write_text('<doc docid="d">\n<seg id="1">a\n</doc>\n', encoding="utf-8")
    with pytest.raises(DataError, match="b.sgm: line 2 opens a <seg>"):
        read_parallel_sgm(broken, good)
