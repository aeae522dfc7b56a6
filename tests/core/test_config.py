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


def test_overriding_the_model_name_drops_the_replaced_builders_keywords():
    # the translator recipe's transformer keywords (dim, num_layers …) mean nothing to model.name=hf
    recipe = load_recipe("translator", ["model.name=hf", "model.checkpoint=ckpt", "data.path=pairs.tsv"])
    assert recipe.model.name == "hf" and recipe.model.kwargs() == {"checkpoint": "ckpt"}
    same = load_recipe("translator", ["model.name=transformer_seq2seq_small", "model.dim=64"])
    assert same.model.kwargs()["dim"] == 64 and same.model.kwargs()["num_layers"] == 3  # same builder: kept


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


@pytest.mark.parametrize("override", ["train.lr=inf", "train.lr=.nan", "train.lr=nan", "train.grad_clip=.inf",
                                      "train.betas=[0.9, .nan]", "train.early_stopping.min_delta=-.inf",
                                      "data.val_size=.inf"])
def test_non_finite_numbers_are_refused_at_the_schema(override):
    with pytest.raises(ConfigError, match="finite") as info:
        load_recipe("digits-cnn", [override])
    assert override.split("=")[0] in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["model.dropout=.nan", "model.dropout=inf"])
def test_non_finite_model_keywords_are_refused(override):
    with pytest.raises(ConfigError, match=r"model\.dropout: .*finite"):
        load_recipe("mnist-mlp", [override])
