"""The seq2seq tasks' row token file: the same batches as the padded in-memory tensors and text lists gave (ids,
sources, references, and what evaluation reads), built once and reused (no BPE trained again), rebuilt for other
pairs or settings or when it lacks the texts, pickled as paths."""

import json
import pickle

import numpy as np
import pytest
import torch

from modelforge.data.padding import pad_rows
from modelforge.data.row_tokens import TextRows
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.seq2seq import pair_rows
from modelforge.tasks.seq2seq.translation import Translation
from modelforge.training.batches import eval_loader


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


def _tsv(tmp_path, rows=60):
    rng = np.random.default_rng(0)
    english, spanish = "the red blue house sky big dog cat".split(), "el la roja azul casa cielo perro gato".split()
    lines = []
    for i in range(rows):
        size = int(rng.integers(1, 14))
        lines.append(" ".join(rng.choice(english, size)) + f" {i}\t" + " ".join(rng.choice(spanish, size + 1)))
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _task(path, **data):
    return Translation(load_recipe({
        "name": "t", "task": "translation",
        "data": {"source": "parallel", "path": str(path), "tokenizer": {"vocab_size": 300, "min_frequency": 1},
                 "val_fraction": 0.2, "test_fraction": 0.2, "val_limit": None, "max_source_tokens": 9,
                 "max_target_tokens": 10, **data},
        "model": {"name": "seq2seq_gru_bahdanau", "embed_dim": 16, "hidden_size": 16, "dropout": 0.0},
    }))


def _texts(dataset, rows):
    batch = dataset.get_batch(rows)
    return batch["sources"], batch["references"]


def _padded_in_memory(task, parts, most):
    """What the task built before token files: every split encoded into padded tensors, long pairs dropped."""
    old = {}
    for split, (sources, targets) in parts.items():
        src, tgt = task.encode_sources(sources), task.encode_targets(targets)
        if split == "train" and most:
            keep = [i for i in range(len(src)) if len(src[i]) <= most and len(tgt[i]) - 2 <= most]
            src, tgt = [src[i] for i in keep], [tgt[i] for i in keep]
            sources, targets = [sources[i] for i in keep], [targets[i] for i in keep]
        pad = task.state()["pad_id"]
        old[split] = (*pad_rows(src, pad, min_width=1), *pad_rows(tgt, pad, min_width=1), sources, targets)
    return old


@pytest.mark.parametrize("settings", [{}, {"max_train_tokens": 6, "tokenizer": {"vocab_size": 300,
                                                                                 "min_frequency": 1,
                                                                                 "shared": False}}])
def test_batches_are_those_of_the_padded_tensors(tmp_path, settings):
    task = _task(_tsv(tmp_path), **settings)
    splits = task.datasets()
    parts = {k: v for k, v in task.load_pairs().items() if v[0]}
    old = _padded_in_memory(task, parts, settings.get("max_train_tokens"))
    for split, (src, src_len, tgt, tgt_len, sources, targets) in old.items():
        now = getattr(splits, split)
        assert len(now) == len(sources) and now.sources == sources and now.targets == targets
        assert isinstance(now.sources, TextRows) and list(now.targets) == targets
        for batch in torch.randperm(len(now), generator=torch.Generator().manual_seed(2)).split(5):
            got = now.get_batch(batch)
            assert torch.equal(got["src"], src[batch, :int(src_len[batch].max())])
            assert torch.equal(got["src_lengths"], src_len[batch])
            assert torch.equal(got["tgt"], tgt[batch, :int(tgt_len[batch].max())])
            assert got["references"] == [targets[i] for i in batch.tolist()] and got["split"] == split
            assert got["sources"] == [sources[i] for i in batch.tolist()]
        assert splits.summary[f"{split}_mean_source_tokens"] == round(sum(src_len.tolist()) / len(src_len), 1)
        assert torch.equal(now.tgt_lengths, tgt_len)
    if settings:
        assert splits.summary["train_dropped_long"] > 0


def test_a_second_run_reuses_the_ids_and_the_tokenizers(tmp_path, monkeypatch):
    path = _tsv(tmp_path)
    first = _task(path, tokenizer={"vocab_size": 300, "min_frequency": 1, "shared": False})
    a = first.datasets()
    folder = tmp_path / ".modelforge-tokens"
    assert len(list(folder.glob("*.tokens"))) == 1 and len(list(folder.glob("*.tokenizer*.json"))) == 2

    def refuse(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(pair_rows, "write_rows", refuse)
    monkeypatch.setattr(Translation, "build_tokenizers", refuse)
    again = _task(path, tokenizer={"vocab_size": 300, "min_frequency": 1, "shared": False})
    b = again.datasets()
    assert again.state() == first.state() and a.summary == b.summary
    assert again.tokenizer("target").backend.to_str() == first.tokenizer("target").backend.to_str()
    assert torch.equal(a.train.get_batch(range(6))["tgt"], b.train.get_batch(range(6))["tgt"])
    assert list(b.train.sources) == list(a.train.sources) and _texts(b.test, [1, 0]) == _texts(a.test, [1, 0])
    monkeypatch.undo()
    _task(path, max_source_tokens=5).datasets()  # another truncation: another file
    _task(path, limit=20).datasets()  # other pairs: another file
    assert len(list(folder.glob("*.tokens"))) == 3


def test_a_file_without_texts_is_rebuilt(tmp_path):
    path = _tsv(tmp_path)
    _task(path).datasets()
    sidecar = next(p for p in (tmp_path / ".modelforge-tokens").glob("*.json") if "tokenizer" not in p.name)
    meta = json.loads(sidecar.read_text())
    for name in ("texts", "text_rows", "text_bytes"):  # as written before the texts were stored
        del meta[name]
    sidecar.write_text(json.dumps(meta))
    splits = _task(path).datasets()
    assert "texts" in json.loads(sidecar.read_text()) and splits.train.sources[0] == _task(path).load_pairs()[
        "train"][0][0]


def test_pair_datasets_pickle_as_paths(tmp_path):
    splits = _task(_tsv(tmp_path, rows=400)).datasets()
    assert splits.train.get_batch([0])["sources"]  # maps opened before pickling stay behind
    data = pickle.dumps(splits.train)
    copy = pickle.loads(data)
    assert copy.src_view.ids._array is None and copy.sources.data._array is None
    assert len(data) < 4000 and splits.train.sources[7].encode() not in data  # paths, not the texts or ids
    assert _texts(copy, [3, 1]) == _texts(splits.train, [3, 1])
    assert torch.equal(copy.get_batch([3, 1])["src"], splits.train.get_batch([3, 1])["src"])


def test_evaluation_reads_the_same_sources_and_references(tmp_path, monkeypatch):
    task = _task(_tsv(tmp_path), decoding={"max_new_tokens": 2})
    splits = task.datasets()
    parts = {k: v for k, v in task.load_pairs().items() if v[0]}
    seen = []
    monkeypatch.setattr(task, "text_metrics", lambda s, r, o: seen.append((s, r)) or {})
    torch.manual_seed(0)
    model = task.build_model().eval()
    for split in ("val", "test"):
        metrics = task.evaluate(model, eval_loader(getattr(splits, split), 4, task.collate))
        assert seen.pop() == parts[split] and metrics["samples"][0]["source"] == parts[split][0][0]
