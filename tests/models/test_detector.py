"""CenterNet-style detector: stride-4 heads for any input size, the heatmap prior, the backbone it reuses."""

import math

import pytest
import torch

from modelforge.core.registry import build


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 128), (70, 70)])
def test_heads_are_at_stride_four(height: int, width: int) -> None:
    model = build("model", "centernet", num_classes=5, width=8, neck_channels=8, head_channels=8).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, height, width))
    cells = (math.ceil(height / model.stride), math.ceil(width / model.stride))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "heatmap": (2, 5, *cells),
        "size": (2, 2, *cells),
        "offset": (2, 2, *cells),
    }


def test_heatmap_starts_at_the_background_prior() -> None:
    torch.manual_seed(0)
    model = build("model", "centernet", width=8, neck_channels=8, head_channels=8).eval()
    assert model.heatmap[-1].bias.allclose(torch.full((3,), -math.log(9)))
    with torch.no_grad():
        probabilities = model(torch.randn(2, 3, 64, 64))["heatmap"].sigmoid()
    assert abs(probabilities.mean().item() - 0.1) < 0.03


def test_backbone_is_a_headless_resnet() -> None:
    model = build("model", "centernet", width=8)
    assert model.backbone.stage_channels == [8, 16, 32]
    assert isinstance(model.backbone.fc, torch.nn.Identity)
