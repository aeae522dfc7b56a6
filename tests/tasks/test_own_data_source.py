"""Naming your own files selects the source that reads them; a built-in dataset is never used in their place."""

import pytest
import yaml

from modelforge.core.errors import ConfigError
from modelforge.tasks.own_data import FILE_SOURCES, file_source_for
from modelforge.tasks.recipes import builtin_recipes, load_recipe


def _builtin_recipe_of(task: str) -> str:
    """A built-in recipe of ``task`` whose data source is a built-in dataset (not already the file source)."""
    file_sources = {rule.source for rule in FILE_SOURCES[task]}
    for name, path in builtin_recipes().items():
        raw = yaml.safe_load(path.read_text())
        if raw["task"] == task and (raw.get("data") or {}).get("source") not in file_sources:
            return name
    pytest.fail(f"{task} reads user files but no built-in recipe of it uses a built-in dataset to test the switch on")


@pytest.mark.parametrize("task", sorted(FILE_SOURCES))
def test_data_path_override_switches_a_builtin_recipe_to_the_file_source(task, tmp_path):
    recipe_name = _builtin_recipe_of(task)
    key = FILE_SOURCES[task][-1].keys[0]
    rule = file_source_for(task, {key: "given"})  # the first file source that key names
    recipe = load_recipe(recipe_name, [f"data.{key}={tmp_path / 'mine'}"])
    assert recipe.data.source == rule.source
    assert getattr(recipe.data, key) == str(tmp_path / "mine")


def test_forgetting_data_source_no_longer_trains_on_rotten_tomatoes():
    recipe = load_recipe("sentiment-minilm", ["data.path=reviews.csv", "data.test_path=test.csv"])
    assert recipe.data.source == "file"
    keyword = load_recipe("sentiment-lstm", data__path="reviews.csv")  # the Python API's keyword form
    assert keyword.data.source == "file"


def test_a_builtin_source_named_with_a_file_is_refused():
    with pytest.raises(ConfigError, match=r"data.path names your own files but data.source=rotten_tomatoes"):
        load_recipe("sentiment-minilm", ["data.source=rotten_tomatoes", "data.path=reviews.csv"])
    mapping = {"name": "x", "task": "text_classification", "model": {"name": "bag_of_embeddings"},
               "data": {"source": "bbc_news", "test_path": "t.csv"}}
    with pytest.raises(ConfigError, match="data.test_path .*data.source=bbc_news"):
        load_recipe(mapping)


def test_a_recipe_without_source_that_names_files_reads_them():
    mapping = {"name": "x", "task": "segmentation", "model": {"name": "unet"}, "data": {"path": "scans"}}
    assert load_recipe(mapping).data.source == "folder"
    mapping["data"] = {"annotations": "instances.json", "path": "images"}
    assert load_recipe(mapping).data.source == "coco"


def test_built_in_data_stays_the_default_without_files():
    assert load_recipe("sentiment-minilm").data.source == "rotten_tomatoes"



# ---- columns inferred, then stated ------------------------------------------------------------------------------
def _write(path, header, rows, sep=","):
    path.write_text(sep.join(header) + "\n" + "".join(sep.join(r) + "\n" for r in rows))
    return path


REVIEWS = [("an absorbing and moving story about a family", "pos"), ("dull, slow and far too long", "neg"),
           ("the cast is wonderful and the script sparkles", "pos"), ("a tired plot with nothing new to say", "neg")]


def test_text_and_label_columns_are_inferred_from_a_table(tmp_path):
    from modelforge.data.formats.table_columns import infer_columns

    rows = [(str(i), f"{text} number {i}", label, "2026") for i, (text, label) in enumerate(REVIEWS * 10)]
    table = _write(tmp_path / "r.tsv", ["id", "review", "sentiment", "year"], rows, sep="\t")
    assert infer_columns(table, None, None) == ("review", "sentiment")
    assert infer_columns(table, "review", "year") == ("review", "year")  # named columns are used as they are


def test_ambiguous_columns_are_an_error_listing_every_column(tmp_path):
    from modelforge.core.errors import DataError
    from modelforge.data.formats.table_columns import infer_columns

    rows = [(f"{text} {i}", label, label.upper()) for i, (text, label) in enumerate(REVIEWS * 10)]
    table = _write(tmp_path / "r.tsv", ["body", "gold", "silver"], rows, sep="\t")
    with pytest.raises(DataError, match=r"set data.label_column\. Columns: 'body' .*text-like.*'gold' .*label-like"):
        infer_columns(table, None, None)


def test_stratified_holdout_keeps_the_label_mix_and_is_seeded():
    from modelforge.data.splits import stratified_holdout

    labels = ["a"] * 180 + ["b"] * 20
    keep, held = stratified_holdout(labels, 50, seed=3)
    assert len(held) == 50 and sorted(keep + held) == list(range(200))
    assert sum(labels[i] == "b" for i in held) == 5  # 10 % of the held-out rows, like the data
    assert stratified_holdout(labels, 50, seed=3) == (keep, held) and stratified_holdout(labels, 50, 4)[1] != held


def test_text_task_states_what_it_found_and_records_the_columns(tmp_path):
    from modelforge.tasks.text.text_classification import TextClassification

    rows = [(f"{text} take {i}", label) for i, (text, label) in enumerate(REVIEWS * 50)]
    train = _write(tmp_path / "train.csv", ["review", "sentiment"], [(f'"{t}"', y) for t, y in rows])
    test = _write(tmp_path / "test.csv", ["review", "sentiment"], [(f'"{t}"', y) for t, y in rows[:20]])
    task = TextClassification(load_recipe("sentiment-lstm", [f"data.path={train}", f"data.test_path={test}"]))
    splits = task.datasets()
    assert len(splits.val) == 50 and len(splits.train) == 150 and len(splits.test) == 20  # val_min, stratified
    assert splits.summary["found"] == (
        "found train.csv (text column 'review', label column 'sentiment'): 2 classes (neg 75, pos 75) · "
        "train 150 (train.csv); val 50 (split off train.csv, stratified); test 20 (test.csv)")
    used = task.recipe.data
    assert (used.text_column, used.label_column, used.test_fraction) == ("review", "sentiment", 0.0)


def test_max_length_auto_is_the_95th_percentile_of_training_lengths_and_is_recorded(tmp_path):
    from modelforge.tasks.text.text_classification import TextClassification

    # 96 short texts of 4 words and 4 long ones of 200: the long tail is cut, the short ones never are
    rows = [(" ".join(["long"] * 200) if i % 25 == 0 else f"good film number {i}", "pos" if i % 2 else "neg")
            for i in range(100)]
    train = _write(tmp_path / "t.csv", ["text", "label"], rows)
    overrides = [f"data.path={train}", "data.max_length=auto", "data.max_length_cap=64", "data.val_fraction=0",
                 "data.test_fraction=0"]
    task = TextClassification(load_recipe("sentiment-lstm", overrides))
    splits = task.datasets()
    assert task.recipe.data.max_length == task.state()["max_length"] == 8  # 4 words → 8 is the floor
    assert splits.summary["train_truncated"] == 4
    overrides[3:] = ["data.max_length_cap=16"]  # a cap below the percentile wins
    rows = [(f"take {i} " + " ".join(["word"] * 30), "pos" if i % 2 else "neg") for i in range(40)]
    _write(tmp_path / "t.csv", ["text", "label"], rows)
    task = TextClassification(load_recipe("sentiment-lstm", [*overrides, "data.val_fraction=0"]))
    task.datasets()
    assert task.state()["max_length"] == 16
