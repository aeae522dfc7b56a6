"""Text classification and language modeling tasks on small files: tokenizers, batching, masks, splits, bad input."""

import csv
import math
import os

import numpy as np
import pytest
import torch

from modelforge.core.errors import ConfigError, DataError
from modelforge.data.text_encoding import TokenizerConfig, build_tokenizer
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.text.language_modeling import LanguageModeling, TokenWindows
from modelforge.tasks.text.text_classification import TextClassification

REVIEWS = [
    ("A fine, funny film with a great cast.", "pos"),
    ("Dull and far too long; I left early.", "neg"),
    ("Great fun!", "pos"),
    ("A mess of a movie, badly acted and badly written, with nothing to say and two hours to say it.", "neg"),
    ("Charming, warm and clever.", "pos"),
    ("Boring.", "neg"),
] * 6

CORPUS = "".join(f"LINE {i}: To be, or not to be, that is the question.\n" for i in range(120))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _table(tmp_path, rows=REVIEWS, name="reviews.csv"):
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)
    return path


def _classifier(tmp_path, model=None, **data):
    raw = {
        "name": "t", "task": "text_classification",
        "data": {"source": "file", "path": str(_table(tmp_path)), "text_column": "review", "label_column": "sentiment",
                 "val_fraction": 0.0, "test_fraction": 0.0, **data},
        "model": model or {"name": "rnn_text_classifier", "embed_dim": 8, "hidden_size": 8, "dropout": 0.0},
    }
    task = TextClassification(load_recipe(raw))
    return task, task.datasets()


def _lm(tmp_path, **data):
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():  # rewriting it would change its modification time, and with it the token file's key
        corpus.write_text(CORPUS, encoding="utf-8")
    raw = {
        "name": "lm", "task": "language_modeling",
        "data": {"source": "file", "path": str(corpus), "block_size": 16, "val_fraction": 0.2, **data},
        "model": {"name": "gpt", "dim": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0},
    }
    task = LanguageModeling(load_recipe(raw))
    return task, task.datasets()


# --- tokenizers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_char_and_bpe_tokenizers_round_trip_exactly(kind):
    text = "ROMEO:\nBut, soft!  what light through yonder window breaks?\n\n"
    tok = build_tokenizer(TokenizerConfig(kind=kind, vocab_size=300, lowercase=False), [text] * 20)
    ids = tok.encode(text).ids
    assert tok.decode(ids) == text
    assert len(ids) == len(text) if kind == "char" else len(ids) < len(text)


def test_word_and_wordpiece_tokenizers_lowercase_and_reserve_pad_and_unk():
    for kind in ("word", "wordpiece"):
        tok = build_tokenizer(TokenizerConfig(kind=kind, vocab_size=200), [t for t, _ in REVIEWS])
        assert tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
        assert tok.encode("GREAT").ids == tok.encode("great").ids
        assert tok.encode("zzyzx").ids[0] == 1 or kind == "wordpiece"


def test_pretrained_tokenizer_needs_a_path():
    with pytest.raises(ConfigError, match="tokenizer.path"):
        build_tokenizer(TokenizerConfig(kind="pretrained"), [])


# --- text classification: data and batching ---------------------------------------------------------------------


def test_batches_are_padded_with_lengths_and_label_ids(tmp_path):
    task, splits = _classifier(tmp_path, tokenizer={"kind": "word"})
    ids, lengths, labels = splits.train.get_batch(range(len(splits.train)))
    assert task.labels == ["neg", "pos"] and labels[:2].tolist() == [1, 0]
    assert ids.shape == (len(REVIEWS), int(lengths.max()))
    for row, n in zip(ids, lengths):
        assert (row[:n] != 0).all() and (row[n:] == 0).all()  # real tokens, then [PAD] = 0
    assert task.tokenizer.decode(ids[0, : lengths[0]].tolist()) == "a fine , funny film with a great cast ."


def test_max_length_truncates_and_counts(tmp_path):
    task, splits = _classifier(tmp_path, max_length=5)
    assert splits.train[0][0].shape == (5,)
    assert splits.summary["train_truncated"] == 4 * 6  # all but "Great fun!" and "Boring." have > 5 tokens
    assert task.tokenizer.encode("Great fun!").ids and len(task.tokenizer.encode("Boring.").ids) == 2


def test_file_source_hash_split_and_limit(tmp_path):
    distinct = [(f"{text} ({i})", label) for i, (text, label) in enumerate(REVIEWS)]
    _, splits = _classifier(tmp_path, path=str(_table(tmp_path, distinct, "distinct.csv")), val_fraction=0.3,
                            test_fraction=0.3)
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == len(REVIEWS) and all(sizes)
    task, limited = _classifier(tmp_path, limit=4)
    assert len(limited.train) == 4
    assert sorted(limited.train.targets.tolist()) == [0, 0, 1, 1], "spread over the file, not its first rows"


def test_a_test_label_unseen_in_training_is_an_error(tmp_path):
    test = _table(tmp_path, [("Fine.", "pos"), ("Odd.", "neutral")], name="test.csv")
    with pytest.raises(DataError, match="neutral"):
        _classifier(tmp_path, test_path=str(test))


def test_missing_column_and_missing_path_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="did you mean"):
        _classifier(tmp_path, text_column="reviews")
    with pytest.raises(ConfigError, match="data.path"):
        _classifier(tmp_path, path=None)


@pytest.mark.parametrize("model", [
    {"name": "rnn_text_classifier", "embed_dim": 8, "hidden_size": 8, "dropout": 0.0},
    {"name": "encoder_classifier", "dim": 16, "num_layers": 1, "num_heads": 2, "mlp_hidden": 32, "dropout": 0.0,
     "classifier_dropout": 0.0},
    {"name": "seed_rnn", "hidden_size": 8},
])
def test_padding_never_changes_a_texts_logits(tmp_path, model):
    task, _ = _classifier(tmp_path, model=model)
    net = task.build_model().eval()
    short, long = "great fun", "a mess of a movie , badly acted and badly written"
    with torch.no_grad():
        alone = task.forward(net, task.preprocess([short]))
        padded = task.forward(net, task.preprocess([short, long]))
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_training_step_and_evaluate(tmp_path):
    task, splits = _classifier(tmp_path)
    net = task.build_model()
    batch = splits.train.get_batch(torch.arange(8))
    loss = task.training_step(net, batch).loss
    assert math.isclose(loss.item(), math.log(2), rel_tol=0.2)
    metrics = task.evaluate(net.eval(), [splits.train.get_batch(torch.arange(0, 36))])
    assert {"loss", "accuracy", "macro_f1", "confusion_matrix"} <= set(metrics)
    assert sum(map(sum, metrics["confusion_matrix"])) == 36


# --- text classification: serving -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "   \n", None, 3])
def test_empty_or_non_text_input_is_a_one_line_error(tmp_path, bad):
    task, _ = _classifier(tmp_path)
    with pytest.raises(DataError) as info:
        task.preprocess(["fine", bad])
    assert "input 2" in str(info.value) and "\n" not in str(info.value)


def test_postprocess_gives_label_probability_and_sorted_top(tmp_path):
    task, _ = _classifier(tmp_path)
    out = task.postprocess(torch.tensor([[0.0, 2.0], [1.0, -1.0]]))
    assert [o["label"] for o in out] == ["pos", "neg"]
    assert out[0]["probability"] == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-5)
    assert [t["label"] for t in out[0]["top"]] == ["pos", "neg"]


def test_a_text_file_path_is_read_as_input(tmp_path):
    task, _ = _classifier(tmp_path)
    path = tmp_path / "review.txt"
    path.write_text("Great fun!\n", encoding="utf-8")
    assert torch.equal(task.preprocess([str(path)])[0], task.preprocess(["Great fun!"])[0])


# --- language modeling ------------------------------------------------------------------------------------------


def _ids(windows):
    """Every id a split's windows are cut from (its memory-mapped token span), as a tensor."""
    return torch.from_numpy(np.asarray(windows.ids, dtype=np.int64))


def test_corpus_is_split_contiguously_and_windows_tile_it(tmp_path):
    task, splits = _lm(tmp_path, random_offsets=False, eval_windows=None)
    train_ids, val_ids = _ids(splits.train), _ids(splits.val)
    assert task.decode(train_ids.tolist()) + task.decode(val_ids.tolist()) == CORPUS
    assert len(splits.val) == (len(val_ids) - 17) // 16 + 1
    batch = splits.train.get_batch(torch.tensor([0, 2]))
    assert batch.shape == (2, 17) and torch.equal(batch[1], train_ids[32:49])
    assert torch.equal(batch[0], splits.train[0])


def test_random_offsets_follow_the_global_rng_and_stay_contiguous(tmp_path):
    task, splits = _lm(tmp_path)
    tiles = splits.train.get_batch(torch.arange(6))
    assert tiles.shape == (6, 33)
    torch.manual_seed(3)
    first = task._shifted(tiles)
    torch.manual_seed(3)
    assert torch.equal(task._shifted(tiles), first) and first.shape == (6, 17)
    corpus = _ids(splits.train).tolist()
    for row in first.tolist():
        starts = [i for i in range(len(corpus) - 16) if corpus[i : i + 17] == row]
        assert starts, "every shifted window is a contiguous slice of the training text"


def test_eval_windows_are_capped_and_evenly_spaced(tmp_path):
    _, splits = _lm(tmp_path, eval_windows=3)
    starts = splits.val.starts.tolist()
    assert len(starts) == 3 and starts[0] == 0 and starts == sorted(starts)


def test_untrained_model_loss_is_near_uniform_and_perplexity_matches(tmp_path):
    task, splits = _lm(tmp_path)
    torch.manual_seed(0)
    net = task.build_model().eval()
    metrics = task.evaluate(net, [splits.val.get_batch(torch.arange(len(splits.val)))])
    vocab = task.state_dict_["vocab_size"]
    assert abs(metrics["loss"] - math.log(vocab)) < 0.3
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["bits_per_char"] == pytest.approx(metrics["loss"] / math.log(2), rel=1e-6)  # char: 1 token/char


def test_lm_generation_and_prompt_errors(tmp_path):
    task, _ = _lm(tmp_path)
    net = task.build_model()
    from modelforge.tasks.text.generation import SamplingConfig

    out = task.generate(net, "To be", SamplingConfig(max_new_tokens=12, temperature=1.0, seed=0))
    assert len(out) == 12 and out == task.generate(net, "To be", SamplingConfig(12, 1.0, seed=0))
    pieces = []
    streamed = task.generate(net, "To be", SamplingConfig(12, 1.0, seed=0), on_text=pieces.append)
    assert "".join(pieces) == streamed == out
    for bad in ("", "  "):
        with pytest.raises(DataError, match="empty prompt"):
            task.preprocess([bad])


def test_too_short_corpus_for_the_block_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="block_size"):
        _lm(tmp_path, block_size=2000)


def test_token_windows_bounds():
    windows = TokenWindows(torch.arange(10), 4, 3)
    assert windows.starts.tolist() == [0, 3, 6]
    assert windows.get_batch([2]).tolist() == [[6, 7, 8, 9]]


def _entries(folder):
    return [p for p in folder.iterdir() if not p.name.startswith(".")]  # not the build lock


def test_prepared_corpus_is_a_token_file_beside_the_data_reused_per_tokenizer(tmp_path, cache):
    task, splits = _lm(tmp_path, tokenizer={"kind": "bpe", "vocab_size": 300})
    folder = tmp_path / ".modelforge-tokens"
    files = sorted(p.suffixes[-1] for p in _entries(folder))
    assert files == [".json", ".json", ".tokens"]  # sidecar, tokenizer, ids
    assert splits.summary["token_file"].startswith(str(folder))
    again, splits2 = _lm(tmp_path, tokenizer={"kind": "bpe", "vocab_size": 300})
    assert torch.equal(_ids(splits.train), _ids(splits2.train)) and torch.equal(_ids(splits.val), _ids(splits2.val))
    assert again.tokenizer.to_str() == task.tokenizer.to_str()
    assert len(_entries(folder)) == 3
    _lm(tmp_path, tokenizer={"kind": "bpe", "vocab_size": 280})  # another tokenizer: another entry
    assert len(_entries(folder)) == 6
    corpus = tmp_path / "corpus.txt"
    os.utime(corpus, ns=(corpus.stat().st_atime_ns, corpus.stat().st_mtime_ns + 10**9))  # an edited file: rebuilt
    _lm(tmp_path, tokenizer={"kind": "bpe", "vocab_size": 280})
    assert len(_entries(folder)) == 9


def test_processes_started_together_build_the_token_file_once(tmp_path, monkeypatch):
    """torchrun's ranks all prepare the corpus at once: the first builds, the others wait and map its file."""
    import threading

    from modelforge.tasks.text import lm_corpus

    builds, real_build = [], lm_corpus._build

    def counted(*args):
        builds.append(1)
        return real_build(*args)

    monkeypatch.setattr(lm_corpus, "_build", counted)
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")  # before the threads: none sees it half-written
    results = []
    threads = [threading.Thread(target=lambda: results.append(_lm(tmp_path)[1])) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and len(results) == 3
    assert all(torch.equal(_ids(r.train), _ids(results[0].train)) for r in results)


def test_language_model_resume_is_exact_with_random_window_offsets(tmp_path):
    from safetensors.torch import load_file

    import modelforge

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    recipe = {
        "name": "lm", "task": "language_modeling",
        "data": {"source": "file", "path": str(corpus), "block_size": 16, "val_fraction": 0.2, "eval_windows": 2},
        "model": {"name": "gpt", "dim": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.1},
        "train": {"batch_size": 4, "max_steps": 6, "checkpoint_every_steps": 3, "progress": "off", "epochs": 3},
    }
    straight = modelforge.train(recipe, run_dir=tmp_path / "straight")
    modelforge.train(recipe, ["train.max_steps=3"], run_dir=tmp_path / "resumed")
    resumed = modelforge.train(recipe, run_dir=tmp_path / "resumed", resume=True)
    a = load_file(straight.model_dir / "model.safetensors")
    b = load_file(resumed.model_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_classifier_evaluation_reports_the_standard_errors_of_loss_and_accuracy():
    from modelforge.tasks.metrics import classifier_evaluation

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1, 1])  # 3 of 4 right
    metrics = classifier_evaluation([(logits[:2], labels[:2]), (logits[2:], labels[2:])], 2)
    per_row = torch.nn.functional.cross_entropy(logits, labels, reduction="none").double()
    assert metrics["accuracy"] == 0.75
    assert metrics["accuracy_se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4 * 4 / 3))  # binomial, n/(n-1)
    assert metrics["loss"] == pytest.approx(float(per_row.mean()))
    assert metrics["loss_se"] == pytest.approx(float(per_row.std() / 2))


def test_a_wrapped_network_still_gets_its_lengths_under_ddp_and_opacus(tmp_path):
    """DDP (and an Opacus GradSampleModule, though the trainer calls the plain model under DP-SGD) wraps the network
    in a module whose forward takes ``*args, **kwargs``: the lengths (or the attention mask) must still reach the
    network inside, or padding changes a text's logits while training under torchrun."""
    import torch.distributed as dist
    from opacus import GradSampleModule
    from torch.nn.parallel import DistributedDataParallel

    task, _ = _classifier(tmp_path)
    net = task.build_model().eval()
    ids, lengths = task.preprocess(["great fun", "a mess of a movie , badly acted and badly written"])
    with torch.no_grad():
        plain = task._logits(net, ids, lengths)
        assert torch.equal(task._logits(GradSampleModule(net), ids, lengths), plain)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with torch.no_grad():
            assert torch.equal(task._logits(DistributedDataParallel(net), ids, lengths), plain)
    finally:
        dist.destroy_process_group()
