"""word2vec data policy (vocabulary, subsampling, dynamic windows for skip-gram and CBOW, noise), relation scoring
on hand-built vectors, and the word_embeddings task end to end in-process on a small user corpus (both objectives)."""

from collections import Counter

import numpy as np
import pytest
import torch

from modelforge.core.errors import ConfigError, DataError
from modelforge.core.registry import build
from modelforge.tasks.embeddings.word_pairs import (
    Vocabulary,
    cbow_windows,
    corpus_pairs,
    corpus_windows,
    keep_probabilities,
    noise_distribution,
    segments,
    skipgram_pairs,
    subsample,
    tokenize,
)
from modelforge.tasks.embeddings.word_relations import Relation, for_corpus, read_relations, score_relations


def test_tokenize_keeps_inner_apostrophes_and_segments_split_on_blank_lines():
    assert tokenize("O'er the King's 2 men, 'tis_so!") == ["o'er", "the", "king's", "men", "tis", "so"]
    assert segments("a b\nc\n\n \n\nd e\n\n") == [["a", "b", "c"], ["d", "e"]]


def test_vocabulary_orders_by_count_drops_rare_words_and_round_trips():
    vocab = Vocabulary.build(Counter({"b": 3, "a": 3, "c": 5, "rare": 1}), min_count=2)
    assert vocab.words == ["c", "a", "b"] and vocab.counts == [5, 3, 3]
    assert vocab.encode(["rare", "b", "c", "zzz"]).tolist() == [2, 0]
    again = Vocabulary.from_tsv(vocab.to_tsv(), "vocab.tsv")
    assert again.words == vocab.words and again.counts == vocab.counts
    with pytest.raises(DataError, match="min_count"):
        Vocabulary.build(Counter({"a": 1, "b": 1}), min_count=2)
    with pytest.raises(DataError, match="vocab.tsv:1"):
        Vocabulary.from_tsv("word-without-count\n", "vocab.tsv")


def test_subsampling_follows_word2vec_formula_and_spares_rare_words():
    counts = np.array([9000.0, 900.0, 90.0, 10.0])
    keep = keep_probabilities(counts, threshold=1e-3)
    freq = counts / counts.sum()
    assert keep[0] == pytest.approx((np.sqrt(freq[0] / 1e-3) + 1) * 1e-3 / freq[0])
    assert np.all(np.diff(keep) >= 0) and keep[-1] == 1.0  # rarer words are kept more often, rarest always
    ids = np.repeat(np.arange(4), counts.astype(int))
    mask = subsample(ids, keep, np.random.default_rng(0))
    observed = np.array([mask[ids == i].mean() for i in range(4)])
    assert np.allclose(observed, keep, atol=0.03)
    assert keep_probabilities(counts, 0).tolist() == [1, 1, 1, 1]


def test_dynamic_window_pairs_stay_in_segment_and_favour_near_words():
    n = 4000
    ids = np.arange(n)
    segment = np.arange(n) // 100  # blocks of 100 tokens
    centres, contexts = skipgram_pairs(ids, segment, window=4, rng=np.random.default_rng(1))
    distance = np.abs(centres - contexts)
    assert distance.min() >= 1 and distance.max() <= 4
    assert np.all(segment[centres] == segment[contexts])  # never across a blank line
    share = np.bincount(distance, minlength=5)[1:] / len(distance)
    # P(radius >= d) = (5 - d) / 4, so the shares fall as 4 : 3 : 2 : 1
    assert np.allclose(share, np.array([4, 3, 2, 1]) / 10, atol=0.02)
    again = skipgram_pairs(ids, segment, window=4, rng=np.random.default_rng(1))
    assert np.array_equal(again[0], centres) and np.array_equal(again[1], contexts)  # seeded: resumable


def test_cbow_windows_hold_every_word_within_the_drawn_radius_inside_the_segment():
    n, window = 4000, 4
    ids = np.arange(n) * 7  # ids differ from positions, so the test sees ids being gathered
    segment = np.arange(n) // 100
    contexts, mask, centres = cbow_windows(ids, segment, window, np.random.default_rng(1))
    assert contexts.shape == mask.shape == (n, 2 * window) and mask.dtype == bool and centres.tolist() == ids.tolist()
    offsets = np.array([-4, -3, -2, -1, 1, 2, 3, 4])
    position = centres[:, None] // 7 + offsets
    assert np.array_equal(contexts[mask], (position * 7)[mask])  # column j is the word at offsets[j]
    assert np.all(contexts[~mask] == 0)  # padding
    assert np.all(segment[position[mask]] == segment[(centres // 7).repeat(mask.sum(1))])  # never across segments
    # the context is every word within one radius: symmetric away from segment edges, the radius uniform in 1..4
    inner = (np.arange(n) % 100 >= window) & (np.arange(n) % 100 < 100 - window)
    radius = np.abs(offsets * mask[inner]).max(1)
    assert np.array_equal(mask[inner], np.abs(offsets) <= radius[:, None])
    assert np.allclose(np.bincount(radius, minlength=5)[1:] / inner.sum(), 0.25, atol=0.03)
    # at a segment's first word only right-hand words remain
    first = np.arange(0, n, 100)
    assert not mask[first, :window].any() and mask[first, window].all()
    again = cbow_windows(ids, segment, window, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(again, (contexts, mask, centres)))  # seeded: resumable


def test_cbow_windows_drop_centres_without_context_and_pad_short_windows():
    ids = np.array([10, 11, 12, 13, 14, 15])
    segment = np.array([0, 0, 1, 2, 2, 3])  # 12 and 15 are alone in their segments
    contexts, mask, centres = cbow_windows(ids, segment, 3, np.random.default_rng(0))
    assert centres.tolist() == [10, 11, 13, 14]
    assert [sorted(row[m].tolist()) for row, m in zip(contexts, mask)] == [[11], [10], [14], [13]]
    assert mask.sum() == 4 and np.all(contexts[~mask] == 0)
    empty = cbow_windows(ids[:0], segment[:0], 3, np.random.default_rng(0))
    assert [a.shape for a in empty] == [(0, 6), (0, 6), (0,)]


def test_corpus_windows_share_the_subsampled_stream_with_corpus_pairs():
    vocab = Vocabulary.build(Counter({"a": 4, "b": 2, "c": 2}), min_count=1)
    blocks = [["a", "x", "b", "c"], ["zz"], ["c"]]
    contexts, mask, centres, kept = corpus_windows(blocks, vocab, 2, 0.0, np.random.default_rng(0))
    assert kept == 4 and centres.tolist() == [0, 1, 2]  # "c" alone in its segment has no context
    pair_centres, pair_contexts, pair_kept = corpus_pairs(blocks, vocab, 2, 0.0, np.random.default_rng(0))
    assert pair_kept == kept  # the same stream, drawn the same way
    # with the same radii, the windows hold exactly the skip-gram pairs
    window_pairs = sorted((int(c), int(w)) for c, row, m in zip(centres, contexts, mask) for w in row[m])
    assert window_pairs == sorted(zip(pair_centres.tolist(), pair_contexts.tolist()))


def test_corpus_pairs_drop_unknown_words_and_noise_is_unigram_to_the_three_quarters():
    vocab = Vocabulary.build(Counter({"a": 4, "b": 1}), min_count=1)
    centres, contexts, kept = corpus_pairs([["a", "x", "b"], ["zz"]], vocab, 2, 0.0, np.random.default_rng(0))
    assert kept == 2 and sorted(zip(centres.tolist(), contexts.tolist())) == [(0, 1), (1, 0)]
    noise = noise_distribution(np.array([16.0, 1.0]))
    assert noise == pytest.approx(np.array([8.0, 1.0]) / 9.0)


def _hand_built() -> tuple[torch.nn.Module, dict[str, int]]:
    words = ["king", "queen", "man", "woman", "apple", "pear", "stone"]
    vectors = torch.tensor([
        [1.0, 1.0, 0.0, 0.0],  # king = royal + male
        [1.0, -1.0, 0.0, 0.0],  # queen = royal + female
        [0.0, 1.0, 0.1, 0.0],  # man
        [0.0, -1.0, 0.1, 0.0],  # woman
        [0.0, 0.0, 1.0, 1.0],  # apple
        [0.0, 0.0, 1.0, 0.9],  # pear
        [0.0, 0.1, -1.0, 0.3],  # stone
    ])
    model = build("model", "skipgram", vocab_size=len(words), dim=4)
    with torch.no_grad():
        model.in_vectors.weight.copy_(vectors)
    return model, {w: i for i, w in enumerate(words)}


def test_nearest_and_analogy_on_hand_built_vectors():
    model, index = _hand_built()
    ids, sims = model.nearest([index["apple"]], k=2)
    assert ids[0].tolist()[0] == index["pear"] and index["apple"] not in ids[0].tolist()
    assert sims[0, 0] > sims[0, 1]
    found, _ = model.analogy(index["man"], index["king"], index["woman"], k=1)
    assert found.tolist() == [index["queen"]]


def test_relation_scoring_counts_hits_misses_and_skips():
    model, index = _hand_built()
    items = [
        Relation("both", "pair", ("apple", "pear")),  # hit
        Relation("both", "pair", ("apple", "stone")),  # miss at k=1
        Relation("both", "analogy", ("man", "king", "woman", "queen")),  # hit
        Relation("both", "analogy", ("man", "woman", "king", "apple")),  # miss (queen is the answer)
        Relation("both", "pair", ("apple", "unicorn")),  # skipped: not in the vocabulary
    ]
    metrics = score_relations(model.vectors, index, items, k=1)
    assert metrics["relations_scored"] == 4 and metrics["relations_skipped"] == 1
    assert metrics["pair_accuracy"] == 0.5 and metrics["analogy_accuracy"] == 0.5
    assert metrics["analogy_top1"] == 0.5 and metrics["relation_accuracy"] == 0.5


def test_builtin_relation_file_has_enough_items_per_corpus(tmp_path):
    items = read_relations("builtin")
    for corpus in ("shakespeare", "bible"):
        mine = for_corpus(items, corpus)
        assert len(mine) >= 30 and {r.kind for r in mine} == {"pair", "analogy"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("# header\nboth\tanalogy\tking queen man\n")
    with pytest.raises(DataError, match="bad.tsv:2: analogy needs 4 words"):
        read_relations(str(bad))


def _recipe(corpus, name="skipgram-shakespeare", **data):
    from modelforge.tasks.recipes import load_recipe

    return load_recipe(name, [
        "data.source=file", f"data.path={corpus}", "data.min_count=2", "data.window=2", "data.val_fraction=0.2",
        "model.dim=8", "train.batch_size=64", *[f"data.{k}={v}" for k, v in data.items()],
    ])


ROYAL_LINES = "the king and the queen walk in the garden\nthe man and the woman walk home\n\n"
ROYAL_RELATIONS = "both\tpair\tking queen\nboth\tanalogy\tman king woman queen\n"


def _royal_corpus(tmp_path, relations: str = ROYAL_RELATIONS):
    """A ten-word corpus (blank-line segments) and a relation file for it: (corpus path, relations path)."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(ROYAL_LINES * 30)
    relation_file = tmp_path / "rel.tsv"
    relation_file.write_text(relations)
    return corpus, relation_file


def test_task_trains_evaluates_and_predicts_on_a_user_corpus(tmp_path):
    from modelforge.tasks.embeddings.word_embeddings import WordEmbeddings

    corpus, relations = _royal_corpus(tmp_path)
    task = WordEmbeddings(_recipe(corpus, relations=relations))
    splits = task.datasets()
    assert splits.summary["vocab_size"] == 10 and len(splits.train) > 0 and len(splits.val) > 0
    model = task.build_model()
    torch.manual_seed(0)
    batch = splits.train.get_batch(torch.arange(16))
    out = task.training_step(model, batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    metrics = task.evaluate(model, [splits.val.get_batch(torch.arange(len(splits.val)))])
    assert metrics["relations_scored"] == 2 and 0 <= metrics["relation_accuracy"] <= 1 and metrics["loss"] > 0
    result = task.postprocess(task.forward(model, task.preprocess(["King"])))
    assert len(result[0]["neighbors"]) == 9 and all(n["word"] != "king" for n in result[0]["neighbors"])
    with pytest.raises(DataError, match="close words: queen"):
        task.preprocess(["queene"])

    # ONNX: the word vectors as a lookup graph, the words in id order in the metadata
    import json

    import onnxruntime as ort

    from modelforge.artifacts.export import export_onnx
    from modelforge.artifacts.model_dir import save_artifact

    save_artifact(tmp_path / "run" / "model", task.recipe, task, model)
    exported = export_onnx(tmp_path / "run")
    assert exported.files == [tmp_path / "run" / "model.embeddings.onnx"] and exported.max_abs_diff == 0
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    words = json.loads(session.get_modelmeta().custom_metadata_map["modelforge.vocabulary"])
    ids = np.array([words.index("king"), words.index("queen")])
    (vectors,) = session.run(None, {"word_ids": ids})
    np.testing.assert_array_equal(vectors, model.vectors.detach().numpy()[[task.word_id("king"),
                                                                          task.word_id("queen")]])


def test_cbow_task_trains_on_windows_evaluates_and_predicts(tmp_path):
    from modelforge.tasks.embeddings.word_embeddings import WordEmbeddings

    corpus, relations = _royal_corpus(tmp_path)
    task = WordEmbeddings(_recipe(corpus, "cbow-shakespeare", relations=relations, subsample=0))
    assert task.objective == "cbow"
    splits = task.datasets()
    assert splits.summary["train_windows"] == len(splits.train) > 0 and splits.summary["val_windows"] > 0
    contexts, mask, centres = splits.train.tensors
    assert contexts.shape == mask.shape == (len(centres), 4) and mask.any(1).all()
    model = task.build_model()
    torch.manual_seed(0)
    batch = splits.train.get_batch(torch.arange(32))
    loss = task.training_step(model, batch).loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    learned = model.in_vectors.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert learned == sorted(set(batch[0][batch[1]].tolist()))  # the context words' input vectors learn
    torch.manual_seed(0)  # the padding is masked: other ids there change nothing
    scrambled = task.training_step(model, (batch[0].masked_fill(~batch[1], 7), batch[1], batch[2])).loss
    assert torch.equal(scrambled, loss) and not batch[1].all()
    val = splits.val.get_batch(torch.arange(len(splits.val)))
    assert len(val) == 4 and val[-1].shape == (len(splits.val), 5)  # fixed negatives
    metrics = task.evaluate(model, [val])
    assert metrics["relations_scored"] == 2 and metrics["loss"] > 0
    result = task.postprocess(task.forward(model, task.preprocess(["queen"])))
    assert len(result[0]["neighbors"]) == 9 and all(n["word"] != "queen" for n in result[0]["neighbors"])
    assert [n["word"] for n in task.neighbors(model, "queen", k=9)] == [n["word"] for n in result[0]["neighbors"]]
    assert len(task.analogy(model, "man", "king", "woman", k=2)) == 2


def test_models_other_than_skipgram_and_cbow_are_a_one_line_config_error(tmp_path):
    from modelforge.tasks.embeddings.word_embeddings import WordEmbeddings
    from modelforge.tasks.recipes import find_recipe, load_recipe, load_yaml

    raw = load_yaml(find_recipe("skipgram-shakespeare"))
    task = WordEmbeddings(load_recipe({**raw, "model": {"name": "mlp"}}))
    with pytest.raises(ConfigError, match="skipgram or cbow, not 'mlp'") as caught:
        task.build_model()
    assert "\n" not in str(caught.value)
    assert WordEmbeddings(load_recipe("skipgram-shakespeare")).objective == "skipgram"


def test_empty_corpus_is_a_one_line_data_error(tmp_path):
    from modelforge.tasks.embeddings.word_embeddings import WordEmbeddings

    corpus = tmp_path / "digits.txt"
    corpus.write_text("123 456 --- 789\n")
    with pytest.raises(DataError, match="no words"):
        WordEmbeddings(_recipe(corpus)).datasets()


def test_report_samples_show_relation_items_or_neighbours(tmp_path):
    from modelforge.tasks.embeddings.word_embeddings import WordEmbeddings

    corpus, relations = _royal_corpus(tmp_path, ROYAL_RELATIONS + "both\tpair\tking unicorn\n")
    task = WordEmbeddings(_recipe(corpus, relations=relations))
    splits = task.datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()
    view = task.report_samples(model, splits, 8)
    # the unicorn item is not in the vocabulary: not scored, not shown
    assert "king – queen" in view.html and "man : king :: woman : ?" in view.html and "unicorn" not in view.html
    assert view.note.endswith("over the 2 scored relation items") and " of 2 found within the top 10" in view.note
    assert view.html.count('class="right"') + view.html.count('class="wrong"') == 2

    plain = WordEmbeddings(_recipe(corpus, relations="null"))
    plain.datasets()
    view = plain.report_samples(plain.build_model().eval(), splits, 3)
    assert "no relation file" in view.note and view.html.count("<tr>") == 4  # header + 3 words
