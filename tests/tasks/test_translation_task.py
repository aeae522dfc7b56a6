"""Translation task: metrics come from sacrebleu, parallel-file errors, whole-book Bible split, length filter,
tokenizer round trip, and the predict path on a tiny untrained model."""

import pytest
import sacrebleu
import torch

from modelforge.core.errors import DataError
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.seq2seq.translation import Translation

HYPS = ["The cat sat on the mat.", "He went to the market yesterday and bought bread."]
REFS = ["The cat is sitting on the mat.", "Yesterday he went to the market and bought some bread."]


def _task(tmp_path, **data):
    recipe = load_recipe({
        "name": "t", "task": "translation",
        "data": {"tokenizer": {"vocab_size": 300, "min_frequency": 1}, "val_limit": 4, **data},
        "model": {"name": "seq2seq_gru_bahdanau", "embed_dim": 16, "hidden_size": 16, "dropout": 0.0},
        "train": {"output_dir": str(tmp_path)},
    })
    return Translation(recipe)


def _tsv(tmp_path, rows=40):
    path = tmp_path / "pairs.tsv"
    words = ["red house", "blue sky", "big dog", "small cat", "green tree"]
    spanish = ["casa roja", "cielo azul", "perro grande", "gato pequeño", "árbol verde"]
    lines = [f"the {words[i % 5]}\tel {spanish[i % 5]}" if i % 2 else
             f"the {words[i % 5]} and the {words[(i + 1) % 5]} and the {words[(i + 2) % 5]} number {i}\t"
             f"el {spanish[i % 5]} y el {spanish[(i + 1) % 5]} y el {spanish[(i + 2) % 5]} número {i}"
             for i in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bleu_and_chrf_are_sacrebleus_own_values(tmp_path):
    metrics = Translation.text_metrics(_task(tmp_path), HYPS, REFS, HYPS)
    expected_bleu = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    expected_chrf = sacrebleu.corpus_chrf(HYPS, [REFS]).score
    assert metrics["bleu"] == pytest.approx(expected_bleu) and 5 < metrics["bleu"] < 95
    assert metrics["chrf"] == pytest.approx(expected_chrf) and 5 < metrics["chrf"] < 95
    assert Translation.text_metrics(_task(tmp_path), REFS, REFS, REFS)["bleu"] == pytest.approx(100.0)


def test_parallel_files_with_different_line_counts_fail_naming_both(tmp_path):
    (tmp_path / "train.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "train.es").write_text("uno\ndos\n", encoding="utf-8")
    task = _task(tmp_path, source="parallel", path=str(tmp_path / "train"), source_lang="en", target_lang="es")
    with pytest.raises(DataError) as info:
        task.datasets()
    message = str(info.value)
    assert "train.en" in message and "train.es" in message and "3" in message and "2" in message


def test_parallel_tsv_with_a_bad_row_names_the_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        _task(tmp_path, source="parallel", path=str(path)).datasets()


def test_parallel_tsv_splits_encodes_and_filters_long_pairs(tmp_path):
    task = _task(tmp_path, source="parallel", path=str(_tsv(tmp_path)), val_fraction=0.2, test_fraction=0.2,
                 max_train_tokens=8)
    splits = task.datasets()
    total = len(splits.train) + splits.summary["train_dropped_long"] + len(splits.val) + len(splits.test)
    assert total == 40 and splits.summary["train_dropped_long"] > 0
    assert int(splits.train.src_lengths.max()) <= 8
    batch = splits.train.get_batch([0, 1])
    state = task.state()
    assert batch["tgt"][0, 0] == state["bos_id"]
    assert (batch["tgt"] == state["eos_id"]).sum() == 2
    # byte-level BPE: decoding the target ids gives back the reference text
    ids = [row[1 : int(n) - 1] for row, n in zip(batch["tgt"].tolist(), splits.train.tgt_lengths[[0, 1]])]
    assert task.decode_targets(ids) == batch["references"]
    assert set(splits.test.sources).isdisjoint(splits.train.sources)


def test_bible_split_holds_out_whole_books(tmp_path):
    task = _task(tmp_path, bible_range="Obadiah-Micah", val_fraction=0.2, test_fraction=0.2, val_limit=None)
    pairs = task.load_pairs()
    from modelforge.data.builtin.bible import load_bible_en_es

    verses = load_bible_en_es("Obadiah-Micah")
    book_of = {v.en: v.book for v in verses}
    books = {name: {book_of[s] for s in sources} for name, (sources, _) in pairs.items()}
    assert books["train"] and books["test"] and books["train"].isdisjoint(books["test"])
    assert books["val"].isdisjoint(books["train"] | books["test"])
    assert sum(len(s) for s, _ in pairs.values()) == len(verses)


def test_predict_returns_text_for_each_input(tmp_path):
    task = _task(tmp_path, source="parallel", path=str(_tsv(tmp_path)))
    task.datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    out = task.postprocess(task.forward(model, task.preprocess(["the red house", "the big dog number 3"])))
    assert len(out) == 2 and all(isinstance(o["translation"], str) for o in out)
    with pytest.raises(DataError, match="empty"):
        task.preprocess(["  "])


def test_report_samples_show_escaped_source_reference_and_output(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"a <b> {i}\tuna <b> {i}\n" for i in range(30)), encoding="utf-8")
    task = _task(tmp_path, source="parallel", path=str(path), test_fraction=0.3, decoding={"max_new_tokens": 3})
    splits = task.datasets()
    samples = task.report_samples(task.build_model(), splits, 2)
    assert samples.html.count("<tr><td>") == 2 and "&lt;b&gt;" in samples.html and "<b>" not in samples.html
