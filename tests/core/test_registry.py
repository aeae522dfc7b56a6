import pytest

from modelforge.core import registry
from modelforge.core.errors import RegistryError


def test_duplicate_name_is_an_error():
    @registry.register("test-kind", "thing")
    def thing(size: int = 1):
        """A thing."""
        return size

    with pytest.raises(RegistryError, match="already registered"):
        registry.register("test-kind", "thing")(lambda: None)


def test_unknown_keyword_lists_valid_ones():
    with pytest.raises(RegistryError) as info:
        registry.build("model", "mlp", hiden=[3])
    message = str(info.value)
    assert "hiden" in message and "Did you mean 'hidden'" in message
    assert "in_features" in message and "activation" in message


def test_unknown_name_lists_valid_ones():
    with pytest.raises(RegistryError) as info:
        registry.build("model", "seed_cn")
    assert "seed_cnn" in str(info.value) and "Valid:" in str(info.value)


def test_build_passes_keywords():
    model = registry.build("model", "mlp", in_features=4, hidden=[3], num_classes=2, activation="tanh")
    assert model.net[1].in_features == 4 and model.net[-1].out_features == 2


def test_description_is_first_docstring_line():
    entry = registry.get("model", "seed_cnn")
    assert entry.description.startswith("The seed's Keras CNN")
