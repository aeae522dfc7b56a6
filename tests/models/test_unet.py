"""U-Net: per-pixel logits at the input's size for any side (odd, non-square), both upsampling modes, errors."""

import pytest
import torch

from modelforge.core.errors import DataError
from modelforge.core.registry import build


@pytest.mark.parametrize("bilinear", [False, True])
@pytest.mark.parametrize("size", [(32, 32), (30, 30), (17, 23)])
def test_logits_have_the_input_size(size: tuple[int, int], bilinear: bool) -> None:
    model = build("model", "unet_small", num_classes=3, width=4, bilinear=bilinear).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


def test_widths_double_at_each_level() -> None:
    model = build("model", "unet")
    assert [block[0].out_channels for block in [model.inc, *model.down]] == [64, 128, 256, 512, 1024]
    assert model.head.in_channels == 64 and model.head.out_channels == 2


def test_image_smaller_than_the_depth_allows_is_a_data_error() -> None:
    model = build("model", "unet_small", width=4).eval()
    with pytest.raises(DataError, match=r"depth 3 needs at least 8×8: resize the images or lower model.depth"):
        model(torch.randn(1, 1, 7, 12))
