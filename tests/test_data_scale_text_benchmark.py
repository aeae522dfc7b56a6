"""benchmarks/data_scale_text.py: the corpus it trains on is built from the installed real texts, to the size asked."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_corpus_is_shuffled_copies_of_real_paragraphs_up_to_the_size(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import data_scale_text

    monkeypatch.setattr(data_scale_text, "FILE_MB", 0.1)  # several files without writing megabytes
    written = data_scale_text.build_corpus(tmp_path / "corpus", 0.3)
    files = sorted((tmp_path / "corpus").glob("part-*.txt"))
    assert len(files) >= 3 and written == sum(p.stat().st_size for p in files) >= 300_000
    text = "".join(p.read_text(encoding="utf-8") for p in files)
    assert "ROMEO" in text or "HAMLET" in text or "KING" in text  # Shakespeare
    assert "God" in text  # the Bible
    sys.modules.pop("data_scale_text", None)
