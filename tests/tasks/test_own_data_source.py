"""Naming your own files selects the source that reads them; a built-in dataset is never used in their place."""

import pytest
import yaml

from modelforge.core.errors import ConfigError
from modelforge.tasks.own_data import FILE_SOURCES
from modelforge.tasks.recipes import builtin_recipes, load_recipe


def _builtin_recipe_of(task: str) -> str:
    """A built-in recipe of ``task`` whose data source is a built-in dataset (not already the file source)."""
    file_sources = {rule.source for rule in FILE_SOURCES[task]}
    for name, path in builtin_recipes().items():
        raw = yaml.safe_load(path.read_text())
        if raw["task"] == task and (raw.get("data") or {}).get("source") not in file_sources:
            return name
    pytest.skip(f"no built-in-data recipe of {task}")


@pytest.mark.parametrize("task", sorted(FILE_SOURCES))
def test_data_path_override_switches_a_builtin_recipe_to_the_file_source(task, tmp_path):
    recipe_name = _builtin_recipe_of(task)
    rule = FILE_SOURCES[task][-1]
    key = rule.keys[0]
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

