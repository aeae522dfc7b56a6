"""Detection task: CenterNet targets and decoding on hand-made maps, COCO bad input surfaced by the task, evaluation
through COCOeval, and ONNX parity of the exported detector."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.tasks.recipes import load_recipe
from modelforge.tasks.vision.detection import Detection
from modelforge.tasks.vision.detection_targets import centernet_loss, decode, encode_targets, focal_loss


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


def test_decode_of_a_synthetic_heatmap_gives_the_expected_box():
    # one object of class 2: centre at input pixel (42.0, 26.0) → cell (10, 6) with offset (0.5, 0.5), 24×12 px
    heat = torch.full((1, 3, 16, 16), -9.0)
    heat[0, 2, 6, 10] = 3.0
    heat[0, 2, 6, 11] = 1.0  # a weaker neighbour: not a local maximum, so it must not become a second box
    size = torch.zeros(1, 2, 16, 16)
    size[0, :, 6, 10] = torch.tensor([24 / 4, 12 / 4])
    offset = torch.zeros(1, 2, 16, 16)
    offset[0, :, 6, 10] = torch.tensor([0.5, 0.5])
    (found,) = decode({"heatmap": heat, "size": size, "offset": offset}, stride=4, score_threshold=0.3)
    assert found.labels.tolist() == [2]
    assert found.scores[0].item() == pytest.approx(1 / (1 + math.exp(-3)))
    assert found.boxes[0].tolist() == pytest.approx([30.0, 20.0, 54.0, 32.0])


def test_encoded_targets_decode_back_to_the_boxes():
    boxes = [torch.tensor([[4.0, 8.0, 28.0, 30.0], [40.0, 36.0, 60.0, 62.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long)]
    targets = encode_targets(boxes, labels, num_classes=2, out_size=(16, 16), stride=4)
    assert targets.mask.sum().item() == 2 and targets.heatmap[0].eq(1).sum().item() == 2
    assert targets.heatmap[1].max().item() == 0  # an image without objects is all background
    outputs = {"heatmap": _logit(targets.heatmap), "size": targets.size, "offset": targets.offset}
    found = decode(outputs, stride=4, score_threshold=0.9)
    order = found[0].labels.argsort(descending=True)
    assert found[0].labels[order].tolist() == [1, 0]
    assert torch.allclose(found[0].boxes[order], boxes[0], atol=1e-4)
    assert len(found[1].boxes) == 0
    # the loss of the perfect maps is far below that of uninformed ones
    perfect, _ = centernet_loss(outputs, targets)
    blank = {"heatmap": torch.full_like(targets.heatmap, -2.2), "size": torch.zeros_like(targets.size),
             "offset": torch.zeros_like(targets.offset)}  # fmt: skip
    uninformed, parts = centernet_loss(blank, targets)
    assert perfect.item() < 0.05 < uninformed.item() and parts["size_loss"] > 1
    assert focal_loss(_logit(targets.heatmap), targets.heatmap) < focal_loss(torch.zeros(2, 2, 16, 16),
                                                                             targets.heatmap)


def _coco_folder(tmp_path, bad: bool):
    """A COCO file with 6 images of one bright square each; ``bad`` adds a box outside its image and an annotation
    of an unknown category."""
    (tmp_path / "images").mkdir(parents=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = np.full((48, 64, 3), 40, dtype=np.uint8)
        x, y = int(rng.integers(0, 40)), int(rng.integers(0, 28))
        pixels[y : y + 16, x : x + 20] = 220
        Image.fromarray(pixels).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [x, y, 20, 16], "area": 320})
    if bad:
        annotations.append({"id": 100, "image_id": 1, "category_id": 7, "bbox": [70, 50, 10, 10], "area": 100})
        annotations.append({"id": 101, "image_id": 2, "category_id": 99, "bbox": [1, 1, 5, 5], "area": 25})
    data = {"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "square"}]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path / "instances.json"


def _coco_task(path, *overrides):
    recipe = load_recipe("scenes-detector", ["data.source=coco", f"data.annotations={path}", "data.image_size=64",
                                             "data.val_size=1", "data.test_size=1", *overrides])  # fmt: skip
    return Detection(recipe)


def test_bad_coco_annotations_are_counted_skips_or_one_error(tmp_path):
    path = _coco_folder(tmp_path, bad=True)
    splits = _coco_task(path).datasets()
    assert splits.summary["skipped"] == 2 and splits.summary["train_size"] == 4
    assert splits.summary["train_objects"] == 4  # only the good squares are training targets
    assert sum(len(b) for b in splits.train.get_batch(range(len(splits.train)))["boxes"]) == 4
    with pytest.raises(DataError, match=r"instances\.json: annotation 100 on image 0\.png: box .* lies entirely "
                                        r"outside the 64x48 image"):  # fmt: skip
        _coco_task(path, "data.on_error=fail").datasets()
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "3.png")
    (tmp_path / "images" / "3.png").write_bytes((tmp_path / "images" / "3.png").read_bytes()[:60])  # truncated
    assert _coco_task(path).datasets().summary["skipped"] == 3


def test_user_coco_images_are_read_per_item_and_header_checking_defers_truncated_files(tmp_path):
    from modelforge.tasks.vision.detection import CocoImageSet
    from modelforge.training.batches import iterate

    path = _coco_folder(tmp_path, bad=True)
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "3.png")
    (tmp_path / "images" / "3.png").write_bytes((tmp_path / "images" / "3.png").read_bytes()[:60])  # truncated
    task = _coco_task(path, "data.check_images=header")
    splits = task.datasets()
    assert isinstance(splits.train, CocoImageSet) and splits.summary["skipped"] == 2  # 3.png passes its header
    truncated = 0
    for dataset in (splits.train, splits.val, splits.test):
        for i, image in enumerate(dataset.coco.images):
            if image.file_name == "3.png":  # the pixels are first decoded here: one line naming the file
                truncated += 1
                with pytest.raises(DataError, match=r"3\.png"):
                    next(iterate(dataset, [torch.tensor([i])], task.collate, num_workers=1))
                continue
            in_worker = next(iterate(dataset, [torch.tensor([i])], task.collate, num_workers=1))
            in_process = dataset.get_batch([i])
            assert torch.equal(in_worker["image"], in_process["image"]) and in_worker["image"].shape[-1] == 64
            assert in_worker["records"] == in_process["records"]
    assert truncated == 1


def test_coco_letterbox_round_trip_scores_perfect_boxes(tmp_path):
    """Ground truth kept in original pixels: detections mapped back from the letterboxed 64×64 input through the
    task's evaluate score mAP 1.0 when they are the true boxes."""
    task = _coco_task(_coco_folder(tmp_path, bad=False))
    splits = task.datasets()
    batch = splits.train.get_batch(torch.arange(len(splits.train)))
    targets = encode_targets(batch["boxes"], batch["labels"], 1, (16, 16), 4)
    outputs = {"heatmap": _logit(targets.heatmap), "size": targets.size, "offset": targets.offset}

    class Oracle(torch.nn.Module):
        def forward(self, x):
            return outputs

    metrics = task.evaluate(Oracle(), [batch])
    assert metrics["map50"] == pytest.approx(1.0) and metrics["map"] == pytest.approx(1.0)
    found = task.postprocess({**outputs, "meta": [{"letterbox": r["letterbox"], "size": (48, 64)}
                                                  for r in batch["records"]]})  # fmt: skip
    first = found[0]["boxes"][0]
    assert first["label"] == "square" and first["box"] == pytest.approx(batch["records"][0]["gt"][0][1], abs=0.1)


def test_onnx_export_of_the_detector_matches_pytorch(tmp_path):
    import onnxruntime as ort

    from modelforge.artifacts.export import export_onnx
    from modelforge.artifacts.model_dir import load_artifact, save_artifact

    task = _coco_task(_coco_folder(tmp_path / "data", bad=False), "model.width=8", "model.neck_channels=8",
                      "model.head_channels=8")  # fmt: skip
    task.datasets()
    torch.manual_seed(0)
    save_artifact(tmp_path / "run" / "model", task.recipe, task, task.build_model().eval())
    result = export_onnx(tmp_path / "run")
    assert result.outputs == ["heatmap", "size", "offset"] and result.max_abs_diff <= 1e-4
    loaded = load_artifact(tmp_path / "run")
    pictures = [str(tmp_path / "data" / "images" / f"{i}.png") for i in range(3)]
    batch = loaded.task.preprocess(pictures)
    with torch.no_grad():
        expected = loaded.model(batch["image"])
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    actual = session.run(None, {"image": batch["image"].numpy()})
    for name, value in zip(result.outputs, actual, strict=True):
        np.testing.assert_allclose(value, expected[name].numpy(), atol=1e-4, rtol=0)


def test_predict_draws_boxes_and_a_corrupt_picture_is_one_line(tmp_path, capsys):
    from modelforge.artifacts.model_dir import save_artifact
    from modelforge.cli import main

    task = _coco_task(_coco_folder(tmp_path / "data", bad=False), "model.width=8", "model.neck_channels=8",
                      "model.head_channels=8", "data.score_threshold=0")  # fmt: skip
    task.datasets()
    save_artifact(tmp_path / "run" / "model", task.recipe, task, task.build_model().eval())
    picture = tmp_path / "data" / "images" / "0.png"
    assert main(["predict", str(tmp_path / "run"), str(picture), "--output", str(tmp_path / "out")]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    assert len(out["boxes"]) == 100  # threshold 0: the untrained net's top-100 peaks, all drawn
    with Image.open(out["picture"]) as drawn, Image.open(picture) as original:
        assert drawn.size == (256, 192)  # a small picture is enlarged (×4) so the tags stay readable
        shrunk = np.asarray(drawn.resize(original.size, Image.NEAREST), dtype=int)
        assert np.abs(shrunk - np.asarray(original)).max() > 0  # boxes were drawn on it
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["predict", str(tmp_path / "run"), str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.png: not an image file Pillow can read" in err


def test_a_dataset_folder_with_train_and_val_but_no_test_holds_the_test_split_out_of_train(tmp_path):
    for split in ("train", "val"):
        _coco_folder(tmp_path / "coco" / split, bad=False)
    splits = _coco_task(tmp_path / "coco").datasets()
    assert (splits.summary["train_size"], splits.summary["val_size"], splits.summary["test_size"]) == (5, 6, 1)
