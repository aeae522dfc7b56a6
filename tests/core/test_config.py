import pytest

from modelforge.core.config import TrainConfig
from modelforge.core.errors import ConfigError
from modelforge.tasks.recipes import load_recipe, parse_override


def test_override_values_are_typed():
    recipe = load_recipe("digits-cnn", ["train.lr=0.05", "train.epochs=3", "data.limit=100", "model.num_classes=10"])
    assert recipe.train.lr == 0.05 and isinstance(recipe.train.epochs, int)
    assert recipe.data.limit == 100
    assert recipe.model.kwargs()["num_classes"] == 10


def test_override_nested_section_and_list():
    recipe = load_recipe("mnist-mlp", ["model.hidden=[64, 32]", "train.early_stopping.patience=5"])
    assert recipe.model.kwargs()["hidden"] == [64, 32]
    assert recipe.train.early_stopping.patience == 5


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"unknown key train.lrr. Did you mean train.lr\?"):
        load_recipe("digits-cnn", ["train.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"data.imag_size. Did you mean data.image_size"):
        load_recipe("digits-cnn", ["data.imag_size=3"])


def test_unknown_model_keyword():
    with pytest.raises(ConfigError, match="takes no keyword 'widht'"):
        load_recipe("digits-cnn", ["model.widht=3"])


def test_bad_value_type_is_one_line():
    with pytest.raises(ConfigError) as info:
        load_recipe("digits-cnn", ["train.epochs=many"])
    assert "train.epochs" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="train.optimizer"):
        load_recipe("digits-cnn", ["train.optimizer=rmsprop"])
    with pytest.raises(ConfigError, match="model.hidden"):
        load_recipe("mnist-mlp", ["model.hidden=wide"])


def test_malformed_override():
    for text in ("train.lr", "=3", "train..lr=1"):
        with pytest.raises(ConfigError, match="bad override"):
            parse_override(text)


def test_unknown_recipe_suggests(tmp_path):
    with pytest.raises(ConfigError, match="Did you mean mnist-cnn"):
        load_recipe("mnist-cn")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(str(bad))


def test_unknown_task(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ntask: image_clasification\nmodel: {name: mlp}\n")
    with pytest.raises(ConfigError, match="Did you mean 'image_classification'"):
        load_recipe(str(path))


def test_defaults_come_from_schema():
    assert TrainConfig().optimizer == "adam"
    recipe = load_recipe("digits-cnn")
    assert recipe.train.grad_accum == 1 and recipe.data.shift == 0
