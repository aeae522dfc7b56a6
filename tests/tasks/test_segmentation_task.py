"""Segmentation task: Dice/IoU on known masks (checked against scikit-learn), bad folders surfaced by the task, the
COCO-polygon source, predictions back at the input's size, and ONNX parity of the exported U-Net."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.data.formats.segmentation_folder import write_segmentation_folder
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.vision.segmentation import Segmentation, soft_dice_loss
from modelforge.tasks.vision.segmentation_metrics import confusion_matrix, per_class_scores, segmentation_scores


def test_dice_and_iou_on_known_masks():
    truth = np.zeros((4, 4), dtype=np.int64)
    truth[0:2, 0:2] = 1  # 4 lesion pixels
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[0:2, 1:3] = 1  # 4 predicted, 2 of them right
    scores = segmentation_scores(confusion_matrix(pred, truth, 2), ["background", "lesion"])
    # lesion: TP 2, FP 2, FN 2 → IoU 2/6, Dice 4/8; background: TP 10, FP 2, FN 2 → IoU 10/14, Dice 20/24
    assert scores["iou_lesion"] == pytest.approx(1 / 3) and scores["dice_lesion"] == pytest.approx(0.5)
    assert scores["iou_background"] == pytest.approx(10 / 14) and scores["dice_background"] == pytest.approx(20 / 24)
    assert scores["dice"] == pytest.approx(0.5) and scores["miou"] == pytest.approx((1 / 3 + 10 / 14) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(12 / 16)


def test_scores_agree_with_scikit_learn_and_skip_absent_classes():
    from sklearn.metrics import f1_score, jaccard_score

    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 3, (2, 30, 40)), rng.integers(0, 3, (2, 30, 40))
    iou, dice = per_class_scores(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), 4))
    np.testing.assert_allclose(iou[:3], jaccard_score(truth.ravel(), pred.ravel(), average=None))
    np.testing.assert_allclose(dice[:3], f1_score(truth.ravel(), pred.ravel(), average=None))
    assert np.isnan(iou[3]) and np.isnan(dice[3])  # class 3 appears nowhere: no score, left out of the means
    scores = segmentation_scores(confusion_matrix(pred, truth, 4), ["bg", "a", "b", "c d"])
    assert "iou_c_d" not in scores and scores["miou"] == pytest.approx(iou[:3].mean())
    perfect = torch.nn.functional.one_hot(torch.from_numpy(truth), 3).permute(0, 3, 1, 2).float() * 40
    assert soft_dice_loss(perfect, torch.from_numpy(truth)) < 1e-3


def _folder(root, count=6, size=(24, 32), bad=False):
    rng = np.random.default_rng(1)
    images, masks = [], []
    for _ in range(count):
        mask = np.zeros(size, dtype=np.uint8)
        y, x = int(rng.integers(0, size[0] - 8)), int(rng.integers(0, size[1] - 8))
        mask[y : y + 8, x : x + 8] = 1
        images.append((mask * 180 + 30 + rng.integers(0, 20, size)).astype(np.uint8))
        masks.append(mask)
    write_segmentation_folder(root, images, masks, class_names=["background", "spot"])
    if bad:  # a mask the size of another picture
        Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "00002_mask.png")
    return root


def _task(*overrides):
    return Segmentation(load_recipe("road-scenes", [*overrides, "data.val_size=1", "data.test_size=1"]))


def test_bad_masks_are_counted_skips_or_one_error(tmp_path):
    root = _folder(tmp_path / "seg", bad=True)
    splits = _task("data.source=folder", f"data.path={root}", "data.image_size=16").datasets()
    assert splits.summary["skipped"] == 1
    assert len(splits.train) + len(splits.val) + len(splits.test) == 5
    with pytest.raises(DataError, match=r"00002_mask\.png: mask is 10x10 but its image 00002\.png is 32x24"):
        _task("data.source=folder", f"data.path={root}", "data.on_error=fail").datasets()


def test_user_folder_is_read_per_item_as_the_in_memory_path_decodes_it(tmp_path):
    from modelforge.data.formats.segmentation_folder import read_segmentation_folder
    from modelforge.data.lazy_segmentation import SegmentationFileSet
    from modelforge.training.batches import iterate

    root = _folder(tmp_path / "seg", count=8)
    task = _task("data.source=folder", f"data.path={root}", "data.image_size=16")
    splits = task.datasets()
    assert isinstance(splits.train, SegmentationFileSet) and len(splits.train) == 6
    assert splits.summary["train_class_fractions"]["spot"] > 0.05 and task.state_dict_["image_size"] == [16, 16]
    in_memory = task._tensors(*read_segmentation_folder(root).arrays("RGB"), 255.0, (16, 16))
    lazy = SegmentationFileSet(read_segmentation_folder(root).pairs, "RGB", (16, 16))
    assert torch.equal(lazy.get_batch(range(8))[0], in_memory[0]) and torch.equal(lazy.get_batch(range(8))[1],
                                                                                  in_memory[1])
    from_worker = next(iterate(lazy, [torch.arange(8)], torch.utils.data.default_collate, num_workers=1))
    assert torch.equal(from_worker[0], in_memory[0]) and torch.equal(from_worker[1], in_memory[1])


def test_coco_polygons_become_class_masks(tmp_path):
    (tmp_path / "images").mkdir()
    images, annotations = [], []
    for i in range(5):
        Image.new("RGB", (40, 30), (20 * i, 50, 90)).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 30})
        polygon = [4, 4, 20, 4, 20, 16, 4, 16]  # a 16×12 rectangle
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [4, 4, 16, 12], "area": 192,
                            "segmentation": [polygon]})  # fmt: skip
    data = {"images": images, "annotations": annotations, "categories": [{"id": 3, "name": "box"}]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    task = _task("data.source=coco", f"data.annotations={tmp_path / 'instances.json'}", "data.image_size=40")
    splits = task.datasets()
    assert task.labels == ["background", "box"]
    _, masks = splits.train.get_batch(torch.arange(len(splits.train)))
    share = masks.float().mean().item()  # 192 of 1200 pixels, kept by the nearest-neighbour resize to 40×40
    assert share == pytest.approx(192 / 1200, abs=0.02)
    # read per item: the split holds paths and annotation records, no pixels; each mask is painted when asked
    from modelforge.data.lazy_segmentation import SegmentationFileSet

    assert isinstance(splits.train, SegmentationFileSet) and splits.train.loads_from_disk
    assert splits.train.images.dtype.kind == "S" and not any(isinstance(v, torch.Tensor)
                                                            for v in vars(splits.train).values())


def test_a_dicom_folder_is_read_per_item_scaled_by_its_largest_stored_value(tmp_path):
    from modelforge.data.builtin.phantoms import write_dicom
    from modelforge.data.formats.segmentation_folder import write_mask
    from modelforge.data.lazy_segmentation import SegmentationFileSet

    root = tmp_path / "scans"
    root.mkdir()
    rng = np.random.default_rng(0)
    peaks = [900, 2500, 1200, 700, 1800, 1500]
    for i, peak in enumerate(peaks):
        pixels = rng.integers(0, peak, (20, 20)).astype(np.uint16)
        pixels[0, 0] = peak
        write_dicom(root / f"{i}.dcm", pixels, uid_seed="seg-test", instance_number=i + 1)
        mask = np.zeros((20, 20), dtype=np.uint8)
        mask[5:12, 5:12] = 1
        write_mask(root / f"{i}_mask.png", mask)
    task = _task("data.source=folder", f"data.path={root}", "data.image_size=16")
    splits = task.datasets()
    assert isinstance(splits.train, SegmentationFileSet) and len(splits.train) == 4
    assert task.state_dict_["value_max"] == 2500.0 and task.state_dict_["channels"] == 1
    x, y = splits.train[0]
    assert x.shape == (1, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1 and int(y.max()) == 1


def test_prediction_mask_comes_back_at_the_input_size_and_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    from modelforge.artifacts.export import export_onnx
    from modelforge.artifacts.model_dir import load_artifact, save_artifact

    root = _folder(tmp_path / "seg")
    task = _task("data.source=folder", f"data.path={root}", "data.image_size=16", "model.width=4", "model.depth=2")
    task.datasets()
    torch.manual_seed(0)
    save_artifact(tmp_path / "run" / "model", task.recipe, task, task.build_model().eval())
    loaded = load_artifact(tmp_path / "run")
    with torch.no_grad():
        batch = loaded.task.preprocess([str(root / "00000.png"), str(root / "00001.png")])
        (result, _) = loaded.task.postprocess(loaded.task.forward(loaded.model, batch))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"]))))
    assert mask.shape == (24, 32) and result["size"] == [24, 32]
    assert sum(result["classes"].values()) == pytest.approx(1.0, abs=1e-3)

    exported = export_onnx(tmp_path / "run")
    assert exported.max_abs_diff <= 1e-4 and exported.inputs["image"] == ["batch", 3, 16, 16]
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"image": batch["image"].numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(actual, loaded.model(batch["image"]).numpy(), atol=1e-4, rtol=0)


def test_train_and_val_folders_without_test_hold_the_test_split_out_of_train(tmp_path):
    _folder(tmp_path / "seg" / "train", count=8)
    _folder(tmp_path / "seg" / "val", count=3)
    splits = _task("data.source=folder", f"data.path={tmp_path / 'seg'}", "data.image_size=16").datasets()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7, 3, 1)  # data.test_size=1 of train/
