"""Hugging Face datasets and WebDataset shards as data sources: detected from data.path, their own splits kept, the
columns inferred, read by the text classifier, the language model (into its token file) and the translator; two
processes read disjoint shares that together are the whole split."""

import datasets
import numpy as np
import pytest
import webdataset as wds

from modelforge.core.errors import DataError
from modelforge.data.formats.hf_dataset import rank_share
from modelforge.data.formats.records import detect_format, open_records
from modelforge.data.formats.webdataset_shards import rank_shards, shard_paths
from modelforge.tasks.recipes import load_recipe

WORDS = ["a fine funny film", "dull and far too long", "great fun with a warm cast", "a mess of a movie"]
REVIEWS = [(f"{WORDS[i % 4]} number {i} of the set", "pos" if i % 4 in (0, 2) else "neg") for i in range(60)]
PAIRS = [(f"the red house {i}", f"la casa roja {i}") for i in range(40)]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


def _saved_reviews(tmp_path):
    features = datasets.Features({"review": datasets.Value("string"), "stars": datasets.Value("int32"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = {"review": [t for t, _ in REVIEWS], "stars": [i % 5 for i in range(len(REVIEWS))],
            "label": [1 if y == "pos" else 0 for _, y in REVIEWS]}
    train = datasets.Dataset.from_dict(rows, features=features)
    path = tmp_path / "saved"
    datasets.DatasetDict({"train": train, "validation": train.select(range(12))}).save_to_disk(str(path))
    return path


def _shards(tmp_path, members, count=3, prefix="shard"):
    folder = tmp_path / "shards"
    folder.mkdir(exist_ok=True)
    for s in range(count):
        with wds.TarWriter(str(folder / f"{prefix}-{s:03d}.tar")) as sink:
            for i in range(s, len(members), count):
                sink.write({"__key__": f"{i:05d}", **members[i]})
    return folder


def _task(kind, data, model):
    from modelforge.tasks import get_task

    recipe = load_recipe({"name": "r", "task": kind, "data": data, "model": model})
    return get_task(kind)(recipe)


CLASSIFIER = {"name": "rnn_text_classifier", "embed_dim": 8, "hidden_size": 8, "dropout": 0.0}
GPT = {"name": "gpt", "dim": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0}
GRU = {"name": "seq2seq_gru_bahdanau", "embed_dim": 16, "hidden_size": 16, "dropout": 0.0}


def test_a_saved_dataset_trains_the_classifier_with_its_own_validation_split_and_label_names(tmp_path):
    path = _saved_reviews(tmp_path)
    assert detect_format(str(path)) == "hf"
    task = _task("text_classification", {"path": str(path), "test_fraction": 0.0}, CLASSIFIER)
    splits = task.datasets()
    assert task.data_cfg.source == "file" and task.data_cfg.text_column == "review"
    assert task.data_cfg.label_column == "label" and task.labels == ["neg", "pos"]  # ClassLabel names
    assert len(splits.val) == 12 and len(splits.train) == 60
    assert "(val)" in splits.summary["found"] and "hf" in splits.summary["found"]


@pytest.mark.parametrize("kind", ["text_classification", "language_modeling"])
def test_a_saved_dataset_token_file_is_reused_by_the_next_run(tmp_path, kind):
    """The token files live inside the save_to_disk folder: they must not count as the dataset's files, whose
    sizes and modification times key them (else every run would key, and build, a new one)."""
    path = _saved_reviews(tmp_path)
    model = CLASSIFIER if kind == "text_classification" else {"name": "gpt", "dim": 16, "num_layers": 1,
                                                              "num_heads": 2, "dropout": 0.0}
    lm = {"block_size": 8, "text_column": "review"} if kind == "language_modeling" else {}
    data = {"path": str(path), "test_fraction": 0.0, **lm}
    for _ in range(2):
        _task(kind, data, model).datasets()
    assert len(list((path / ".modelforge-tokens").glob("*.tokens"))) == 1


def test_shards_train_the_classifier_with_validation_held_out(tmp_path):
    members = [{"txt": t, "cls": y} for t, y in REVIEWS]
    task = _task("text_classification", {"path": str(_shards(tmp_path, members)), "val_min": 0,
                                         "val_fraction": 0.2, "test_fraction": 0.0}, CLASSIFIER)
    splits = task.datasets()
    assert task.data_cfg.text_column == "txt" and task.data_cfg.label_column == "cls"
    assert len(splits.train) + len(splits.val) == 60 and len(splits.val) == 12


def test_shard_rows_with_an_empty_text_or_label_are_skipped_and_counted(tmp_path, caplog):
    members = [{"txt": t, "cls": y} for t, y in REVIEWS]
    members[4], members[7] = {"txt": "  ", "cls": "pos"}, {"txt": "fine", "cls": ""}
    task = _task("text_classification", {"path": str(_shards(tmp_path, members)), "val_min": 0, "val_fraction": 0.0,
                                         "test_fraction": 0.0}, CLASSIFIER)
    with caplog.at_level("WARNING", logger="modelforge.data"):
        splits = task.datasets()
    assert len(splits.train) == 58 and "skipped 2 row(s) with an empty text or label" in caplog.text


def test_the_language_model_reads_a_parquet_folder_into_its_token_file(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    lines = [f"line {i}: to be or not to be" for i in range(80)]
    datasets.Dataset.from_dict({"id": list(range(80)), "text": lines}).to_parquet(str(folder / "train-0.parquet"))
    task = _task("language_modeling", {"path": str(folder), "block_size": 8, "val_fraction": 0.2}, GPT)
    splits = task.datasets()
    text = task.decode(np.asarray(splits.train.ids).tolist()) + task.decode(np.asarray(splits.val.ids).tolist())
    assert text == "".join(line + "\n" for line in lines)  # rows joined by newlines, cut by the fractions
    assert (folder / ".modelforge-tokens").is_dir()
    assert (task.data_cfg.format, task.data_cfg.text_column) == ("hf", "text")  # recorded in the run's recipe


def test_the_language_model_keeps_the_shards_own_splits(tmp_path):
    members = [{"txt": f"sentence {i} of the corpus"} for i in range(30)]
    folder = _shards(tmp_path, members[:20], count=2, prefix="train")
    _shards(tmp_path, members[20:], count=1, prefix="val")
    task = _task("language_modeling", {"path": str(folder), "block_size": 4}, GPT)
    splits = task.datasets()
    assert task.decode(np.asarray(splits.val.ids).tolist()) == "".join(m["txt"] + "\n" for m in members[20:])
    assert "(val)" in splits.summary["found"] and splits.test is None  # the recipe asks for no test text


def test_the_language_model_cuts_a_test_split_the_source_lacks_from_the_end_of_its_own_train(tmp_path):
    members = [{"txt": f"sentence {i} of the corpus"} for i in range(30)]
    folder = _shards(tmp_path, members[:20], count=2, prefix="train")
    _shards(tmp_path, members[20:], count=1, prefix="val")
    task = _task("language_modeling", {"path": str(folder), "block_size": 4, "test_fraction": 0.25}, GPT)
    splits = task.datasets()
    train, test, val = (task.decode(np.asarray(s.ids).tolist()) for s in (splits.train, splits.test, splits.val))
    own_train = [m["txt"] for m in members[:20]]  # in the shards' order
    assert sorted((train + test).splitlines()) == sorted(own_train)
    assert len(test) == int(len("".join(line + "\n" for line in own_train)) * 0.25)  # the last quarter
    assert val == "".join(m["txt"] + "\n" for m in members[20:])
    found = splits.summary["found"]
    assert found.index("; val ") < found.index("; test ") and "test " in found and "from its end" in found, found


def test_translation_reads_a_translation_column_and_language_members(tmp_path):
    rows = {"translation": [{"en": en, "es": es} for en, es in PAIRS]}
    path = tmp_path / "wmt"
    datasets.Dataset.from_dict(rows).save_to_disk(str(path))
    task = _task("translation", {"path": str(path), "source_lang": "en", "target_lang": "es",
                                 "tokenizer": {"vocab_size": 300}}, GRU)
    parts = task.load_pairs()
    assert sum(len(p[0]) for p in parts.values()) == 40 and set(parts) == {"train", "val", "test"}
    assert all(s.replace("the red house", "la casa roja") == t for s, t in zip(*parts["train"], strict=True))
    members = [{"en": en, "es": es} for en, es in PAIRS]
    task = _task("translation", {"path": str(_shards(tmp_path, members)), "source_lang": "en", "target_lang": "es",
                                 "val_fraction": 0.1, "test_fraction": 0.0}, GRU)
    parts = task.load_pairs()
    assert sorted(parts["train"][0] + parts["val"][0]) == sorted(en for en, _ in PAIRS)


def test_two_processes_read_disjoint_shares_that_make_the_whole_split(tmp_path):
    train = datasets.load_from_disk(str(_saved_reviews(tmp_path)))["train"]
    shares = [list(rank_share(train, rank, 2)["review"]) for rank in (0, 1)]
    assert not set(shares[0]) & set(shares[1]) and sorted(shares[0] + shares[1]) == sorted(train["review"])
    read = [open_records(str(tmp_path / "saved"), "hf", rank, 2)["train"].column("review") for rank in (0, 1)]
    assert read == shares
    folder = _shards(tmp_path, [{"txt": t, "cls": y} for t, y in REVIEWS], count=4)
    shards = shard_paths(str(folder))
    mine = [rank_shards(shards, rank, 2) for rank in (0, 1)]
    assert not set(mine[0]) & set(mine[1]) and sorted(mine[0] + mine[1]) == shards
    read = [open_records(str(folder), "webdataset", rank, 2)["train"].column("txt") for rank in (0, 1)]
    assert not set(read[0]) & set(read[1]) and sorted(read[0] + read[1]) == sorted(t for t, _ in REVIEWS)
    with pytest.raises(DataError, match="at least one shard per process"):
        rank_shards(shards, 0, 5)


def test_bad_record_sources_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no save_to_disk dataset"):
        open_records(str(empty), "hf")
    with pytest.raises(DataError, match="shard not found"):
        shard_paths(str(tmp_path / "s-{0..1}.tar"))
    path = _saved_reviews(tmp_path)
    task = _task("language_modeling", {"path": str(path), "text_column": "nope"}, GPT)
    with pytest.raises(DataError, match="no column 'nope'"):
        task.datasets()
