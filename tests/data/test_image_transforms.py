import numpy as np
import pytest
import torch
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.data.transforms import (
    IMAGENET_MEAN,
    CenterCrop,
    Compose,
    Letterbox,
    Normalize,
    RandomAffineShift,
    RandomHorizontalFlip,
    Resize,
    Sample,
    hflip,
    imagenet_eval_transform,
    load_image,
    shift,
    to_tensor,
    to_uint8_array,
    unletterbox_boxes,
)


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    return path


def test_load_image_modes_and_round_trip(tmp_path, photo):
    pixels = np.arange(12 * 8 * 3, dtype=np.uint8).reshape(12, 8, 3)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    img = load_image(tmp_path / "exact.png")
    assert img.mode == "RGB" and np.array_equal(np.asarray(img), pixels)
    assert load_image(photo, "L").mode == "L" and load_image(photo, "L").size == (60, 40)
    tensor = to_tensor(img)
    assert tensor.shape == (3, 12, 8) and tensor.dtype == torch.float32
    assert np.array_equal(to_uint8_array(tensor), pixels)


def test_corrupt_truncated_missing_and_huge_images_name_the_file(tmp_path, photo):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a picture at all" * 10)
    with pytest.raises(DataError, match=r"junk\.png: not an image file"):
        load_image(junk)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: truncated or corrupt image"):
        load_image(truncated)
    with pytest.raises(DataError, match=r"missing\.png: no such image file"):
        load_image(tmp_path / "missing.png")
    # a decompression-bomb style guard: the pixel count is checked from the header, before decoding
    with pytest.raises(DataError, match=r"photo\.jpg: image of 60x40 = 2400 pixels exceeds the limit of 1000"):
        load_image(photo, max_pixels=1000)
    assert load_image(photo, max_pixels=None).size == (60, 40)


def test_to_tensor_from_arrays():
    gray = np.full((4, 5), 255, dtype=np.uint8)
    assert to_tensor(gray).shape == (1, 4, 5) and to_tensor(gray).max() == 1.0
    assert to_tensor(np.full((2, 2, 3), 65535, dtype=np.uint16)).min() == 1.0
    with pytest.raises(ValueError, match="unsupported image dtype"):
        to_tensor(np.zeros((2, 2), dtype=np.int32))


def test_resize_moves_boxes_and_masks():
    image = torch.rand(3, 100, 200)
    mask = torch.zeros(100, 200, dtype=torch.long)
    mask[20:60, 40:120] = 3
    sample = Sample(image, boxes=torch.tensor([[40.0, 20.0, 120.0, 60.0]]), labels=torch.tensor([3]), mask=mask)
    out = Resize((50, 100))(sample)
    assert out.image.shape == (3, 50, 100)
    assert out.boxes.tolist() == [[20.0, 10.0, 60.0, 30.0]]
    # nearest-neighbour mask resize keeps exact class indices, and the box still frames the mask
    assert set(out.mask.unique().tolist()) == {0, 3}
    ys, xs = torch.nonzero(out.mask == 3, as_tuple=True)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (20, 10, 60, 30)
    shorter = Resize(50)(sample)
    assert shorter.image.shape == (3, 50, 100) and shorter.boxes.tolist() == [[20.0, 10.0, 60.0, 30.0]]
    assert sample.image.shape == (3, 100, 200), "the input sample is not modified"


def test_letterbox_keeps_aspect_and_maps_boxes_back():
    image = torch.ones(3, 50, 100)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 45.0]])
    out = Letterbox(64, fill=0.0)(Sample(image, boxes=boxes, labels=torch.tensor([1])))
    assert out.image.shape == (3, 64, 64)
    # 100 wide → 64 (scale 0.64), 50 high → 32, centred: 16 rows of padding above and below
    assert out.meta["letterbox"] == (0.64, 0.64, 0, 16)
    assert out.image[:, :16].max() == 0 and out.image[:, 48:].max() == 0 and out.image[:, 16:48].min() > 0.99
    assert torch.allclose(out.boxes, torch.tensor([[6.4, 19.2, 19.2, 44.8]]))
    assert torch.allclose(unletterbox_boxes(out.boxes, out.meta["letterbox"]), boxes, atol=1e-4)


def test_hflip_boxes_and_pixels_agree():
    image = torch.zeros(1, 10, 20)
    image[0, 3, 2] = 1.0
    mask = torch.zeros(10, 20, dtype=torch.long)
    mask[3, 2] = 1
    sample = Sample(image, boxes=torch.tensor([[2.0, 3.0, 3.0, 4.0]]), mask=mask)
    out = hflip(sample)
    assert out.boxes.tolist() == [[17.0, 3.0, 18.0, 4.0]]
    assert out.image[0, 3, 17] == 1.0 and out.mask[3, 17] == 1
    always = RandomHorizontalFlip(p=1.0)(sample)
    never = RandomHorizontalFlip(p=0.0)(sample)
    assert torch.equal(always.image, out.image) and torch.equal(never.image, image)


def test_shift_moves_pixels_clips_and_drops_boxes():
    image = torch.rand(3, 10, 20)
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0], [16.0, 2.0, 20.0, 8.0]])
    sample = Sample(image, boxes=boxes, labels=torch.tensor([1, 2]), mask=torch.randint(0, 3, (10, 20)))
    out = shift(sample, 5, -2)
    assert torch.equal(out.image[:, 0:8, 5:], image[:, 2:10, 0:15])
    assert out.image[:, :, :5].abs().sum() == 0 and out.image[:, 8:].abs().sum() == 0
    assert torch.equal(out.mask[0:8, 5:], sample.mask[2:10, 0:15])
    # the second box moves to x = 21..25, entirely outside: it is dropped with its label
    assert out.boxes.tolist() == [[5.0, 0.0, 10.0, 3.0]] and out.labels.tolist() == [1]


def test_random_transforms_are_reproducible_with_a_generator():
    image = torch.rand(3, 32, 32)

    def run(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return Compose([RandomAffineShift(0.25, generator=gen), RandomHorizontalFlip(generator=gen)])(image)

    assert torch.equal(run(1), run(1))
    assert any(not torch.equal(run(1), run(s)) for s in range(2, 6))


def test_imagenet_pipeline_crops_and_normalises():
    out = imagenet_eval_transform()(torch.ones(3, 300, 400) * torch.tensor(IMAGENET_MEAN)[:, None, None])
    assert out.shape == (3, 224, 224)
    assert out.abs().max() < 1e-5, "an image equal to the ImageNet mean normalises to zero"
    crop = CenterCrop(4)(torch.arange(36.0).reshape(1, 6, 6))
    assert crop[0, 0].tolist() == [7.0, 8.0, 9.0, 10.0]
    with pytest.raises(ValueError, match="3 channel statistics for a 1-channel image"):
        Normalize()(torch.rand(1, 4, 4))
