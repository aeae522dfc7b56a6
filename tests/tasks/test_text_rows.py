"""The text classifier's row token file: the same batches as the padded in-memory tensor gave, built once and reused,
rebuilt when the tokenizer, the file or a cutting setting changes."""

import csv
import json
import pickle

import numpy as np
import pytest
import torch

from modelforge.data.row_tokens import TokenRows, offsets_path, open_row_tokens
from modelforge.data.tensors import TensorDataset
from modelforge.data.text_encoding import encode_padded, pad_id_of
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.text import text_rows
from modelforge.tasks.text.text_classification import TextClassification

WORDS = "the a film great dull warm clever mess long plot actor scene funny boring fine cast".split()


def _rows(count: int = 90) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(count)]
    texts[3] = "   "  # encodes to nothing: one [UNK] (or the pad id), as before
    return [(f"{text} {i}", ("pos", "neg", "meh")[i % 3]) for i, text in enumerate(texts)]


def _table(folder, rows=None, name="reviews.csv"):
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows or _rows())
    return path


def _recipe(path, **data):
    return load_recipe({
        "name": "t", "task": "text_classification",
        "data": {"source": "file", "path": str(path), "text_column": "review", "label_column": "sentiment",
                 "val_fraction": 0.2, "test_fraction": 0.2, "max_length": 12, **data},
        "model": {"name": "rnn_text_classifier", "embed_dim": 8, "hidden_size": 8, "dropout": 0.0},
    })


def _datasets(path, **data):
    task = TextClassification(_recipe(path, **data))
    return task, task.datasets()


def _padded_in_memory(task, path, **data):
    """What the classifier built before token files: each split's texts encoded into one padded tensor."""
    fresh = TextClassification(_recipe(path, **data))
    parts, label_names = fresh._load_tables()
    index = {name: i for i, name in enumerate(label_names)}
    tok, max_length = task.tokenizer, task.state()["max_length"]
    old = {}
    for split, (texts, labels) in parts.items():
        ids, lengths, truncated = encode_padded(tok, list(texts), max_length, pad_id_of(tok))  # a table's: a stream
        labels = torch.tensor([index[y] for y in labels])
        old[split] = (TensorDataset(ids, lengths, labels), truncated, round(float(lengths.float().mean()), 1))
    return old


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("tokenizer", [{"kind": "word"}, {"kind": "wordpiece", "vocab_size": 60},
                                       {"kind": "pretrained", "path": "minilm"}])
def test_batches_are_those_of_the_padded_tensor(tmp_path, tokenizer):
    path = _table(tmp_path)
    task, splits = _datasets(path, tokenizer=tokenizer)
    old = _padded_in_memory(task, path, tokenizer=tokenizer)
    assert set(old) == {"train", "val", "test"}
    for split, (before, truncated, mean) in old.items():
        now = getattr(splits, split)
        assert isinstance(now, TokenRows) and len(now) == len(before)
        order = torch.randperm(len(before), generator=torch.Generator().manual_seed(1))
        for batch in order.split(7):
            for a, b in zip(now.get_batch(batch), before.get_batch(batch)):
                assert a.dtype == b.dtype and torch.equal(a, b)
        assert all(torch.equal(a, b) for a, b in zip(now[5], before[5]))
        assert splits.summary[f"{split}_truncated"] == truncated and truncated > 0
        assert splits.summary[f"{split}_mean_tokens"] == mean


def test_a_second_run_reuses_the_file_and_tokenizes_nothing(tmp_path, monkeypatch):
    path = _table(tmp_path)
    task, first = _datasets(path, max_length="auto", max_length_cap=16)
    folder = tmp_path / ".modelforge-tokens"
    built = sorted(folder.glob("*.tokens"))
    assert len(built) == 1 and offsets_path(built[0]).is_file()
    stamp = built[0].stat().st_mtime_ns, built[0].with_suffix(".json").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(text_rows, "write_row_tokens", refuse)
    monkeypatch.setattr(text_rows, "build_tokenizer", refuse)
    again, second = _datasets(path, max_length="auto", max_length_cap=16)
    assert (built[0].stat().st_mtime_ns, built[0].with_suffix(".json").stat().st_mtime_ns) == stamp
    assert again.recipe.data.max_length == task.recipe.data.max_length <= 16
    assert again.tokenizer.to_str() == task.tokenizer.to_str()
    assert all(torch.equal(a, b) for a, b in zip(first.train.get_batch(range(9)), second.train.get_batch(range(9))))
    assert {k: v for k, v in second.summary.items() if k != "found"} == \
        {k: v for k, v in first.summary.items() if k != "found"}


def test_another_tokenizer_an_edited_file_or_other_settings_build_anew(tmp_path):
    path = _table(tmp_path)
    _datasets(path)
    _datasets(path, tokenizer={"kind": "word", "vocab_size": 12})
    _datasets(path, max_length=6)
    _datasets(path, split_seed=3)
    assert len(list((tmp_path / ".modelforge-tokens").glob("*.tokens"))) == 4
    _table(tmp_path, _rows(60))  # rewritten: another size and modification time
    task, splits = _datasets(path)
    assert len(list((tmp_path / ".modelforge-tokens").glob("*.tokens"))) == 5
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60


def test_a_file_without_its_sidecar_or_offsets_is_rebuilt(tmp_path):
    path = _table(tmp_path)
    _, first = _datasets(path)
    tokens = next((tmp_path / ".modelforge-tokens").glob("*.tokens"))
    offsets_path(tokens).write_bytes(b"\0" * 8)  # cut short, as by a killed run
    assert open_row_tokens(tokens) is None
    _, second = _datasets(path)
    assert open_row_tokens(tokens) is not None
    assert all(torch.equal(a, b) for a, b in zip(first.val.get_batch(range(5)), second.val.get_batch(range(5))))
    tokens.with_suffix(".json").unlink()
    _datasets(path)
    assert json.loads(tokens.with_suffix(".json").read_text())["kind"] == "rows"


def test_a_set_without_a_file_goes_to_the_cache_folder(cache):
    cfg = _recipe("unused.csv", tokenizer={"kind": "word"}).data
    parts = {"train": (["a fine film", "dull"], ["pos", "neg"]), "val": (["great cast"], ["pos"])}

    def prepare(parts):
        source = text_rows.RowSource([], None, text_rows.content_identity(parts))
        places = {split: (split, np.arange(len(texts))) for split, (texts, _) in parts.items()}
        read = text_rows.ReadRows(parts, ["neg", "pos"], {}, places)
        return text_rows.prepare_text_rows(cfg, text_rows.settings_key(cfg), None, source, lambda: read)

    rows = prepare(parts)
    assert rows.built and rows.tokens.path.parent == cache / "token_files"
    again = prepare(parts)
    assert not again.built and again.tokens.path == rows.tokens.path
    assert again.labels("train").tolist() == [1, 0] and again.labels("val").tolist() == [1]
    other = {**parts, "val": (["great cast!"], ["pos"])}  # a built-in set is keyed by its content
    assert prepare(other).built


def test_subsets_and_pickled_copies_read_the_same_rows(tmp_path):
    _, splits = _datasets(_table(tmp_path))
    train = splits.train
    picks = np.array([9, 2, 2, 0])
    part = train.subset(picks)
    assert all(torch.equal(a, b) for a, b in zip(part.get_batch(range(4)), train.get_batch(picks)))
    assert torch.equal(part.subset([3, 0]).get_batch([0, 1])[0], train.get_batch([0, 9])[0])
    copy = pickle.loads(pickle.dumps(train))
    assert copy.view.ids._array is None  # the ids travel as a path, not as an array
    assert all(torch.equal(a, b) for a, b in zip(copy.get_batch(range(6)), train.get_batch(range(6))))
    with pytest.raises(IndexError):
        train.get_batch([len(train)])


def test_stack_batches_and_baseline_rows_follow_the_split(tmp_path, monkeypatch):
    from modelforge.tasks import baselines
    from modelforge.tasks.text.stack_fit import _batches

    _, splits = _datasets(_table(tmp_path))
    read = list(_batches(splits.train, torch.device("cpu")))
    ids, lengths, _ = splits.train.get_batch(range(len(splits.train)))
    assert sum(len(b[0]) for b in read) == len(splits.train)
    assert torch.equal(read[0][0], ids[:64, :int(lengths[:64].max())])
    monkeypatch.setattr(baselines, "MAX_TRAIN", 10)
    task = TextClassification(_recipe(_table(tmp_path)))
    task.datasets()
    rows = baselines.baseline_rows(len(task._load_tables()[0]["train"][0]))
    assert len(task.baseline_texts["train"]) == len(rows) == 10
    result = baselines.run_baseline(task, task.datasets())
    assert result["train_rows"] == 10 and result["test_rows"] == 10


def test_gallery_and_report_samples_stack_items_of_one_width(tmp_path):
    from modelforge.explain.gallery import sample_batch

    task, splits = _datasets(_table(tmp_path))
    (ids, lengths), truths = sample_batch(task, splits.test, 4)
    assert ids.shape == (4, splits.test.width) and len(truths) == 4
    assert task.report_samples(task.build_model().eval(), splits, 3).html
