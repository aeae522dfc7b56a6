"""ResNet: parameter counts and state-dict layout against torchvision's published models, stage shapes, errors."""

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.models.resnet import ResNet, ResNetConfig


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        # torchvision's documented parameter counts for resnet18/34/50 (ImageNet, 1000 classes).
        ("resnet18", {}, 11_689_512),
        ("resnet34", {}, 21_797_672),
        ("resnet50", {}, 25_557_032),
        # The usual CIFAR ResNet-18 (3×3 stem, no max-pool, 10 classes): resnet18 minus its 7×7 stem and 1000-way
        # head (9,408 + 513,000) plus a 3×3 stem and 10-way head (1,728 + 5,130).
        ("resnet18_small", {}, 11_173_962),
    ],
)
def test_parameter_counts_match_the_references(name: str, kwargs: dict, expected: int) -> None:
    assert n_params(build("model", name, **kwargs)) == expected


def test_state_dict_uses_torchvision_names_and_shapes() -> None:
    shapes = {k: tuple(v.shape) for k, v in build("model", "resnet50").state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.conv3.weight"] == (256, 64, 1, 1)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3)  # v1.5: the stride sits on the 3×3 convolution
    assert shapes["layer4.2.bn3.running_var"] == (2048,)
    assert shapes["fc.weight"] == (1000, 2048)
    assert "layer1.1.downsample.0.weight" not in shapes  # identity shortcut when shapes already agree


def test_stages_halve_resolution_and_double_width() -> None:
    model = build("model", "resnet18", width=8).eval()
    with torch.no_grad():
        stages = model.forward_stages(torch.randn(1, 3, 64, 64))
    assert [tuple(s.shape[1:]) for s in stages] == [(8, 16, 16), (16, 8, 8), (32, 4, 4), (64, 2, 2)]
    assert model.stage_channels == [8, 16, 32, 64]


def test_small_stem_keeps_mnist_resolution() -> None:
    model = build("model", "resnet20", in_channels=1, width=4).eval()
    with torch.no_grad():
        stages = model.forward_stages(torch.randn(2, 1, 28, 28))
        logits = model(torch.randn(2, 1, 28, 28))
    assert [tuple(s.shape[-2:]) for s in stages] == [(28, 28), (14, 14), (7, 7)]
    assert logits.shape == (2, 10)


def test_zero_classes_gives_pooled_features() -> None:
    model = build("model", "resnet18_small", num_classes=0, width=4).eval()
    with torch.no_grad():
        features = model(torch.randn(3, 3, 32, 32))
    assert features.shape == (3, 32)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"block": "wide"}, "block must be one of basic, bottleneck"), ({"stem": "huge"}, "stem must be"),
     ({"layers": ()}, "layers must be"), ({"num_classes": -1}, "non-negative")],
)
def test_bad_config_is_a_config_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ResNet(ResNetConfig(**overrides))
