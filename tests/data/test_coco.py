import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.data.formats.coco import (
    CocoDetection,
    annotation_mask,
    detections_to_results,
    evaluate_coco,
    read_coco,
    rle_from_mask,
    semantic_mask,
    write_coco,
    write_coco_results,
)


def _coco_dict() -> dict:
    return {
        "info": {"description": "tiny test set"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 50, "height": 50},
            {"id": 7, "file_name": "c.png", "width": 20, "height": 20},
        ],
        "categories": [
            {"id": 3, "name": "cat", "supercategory": "animal"},
            {"id": 5, "name": "dog", "supercategory": "animal"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 12], "area": 120, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 15, 2, 15]]},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [20.5, 4.25, 15, 20], "area": 300.0, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [0, 0, 50, 50], "area": 2500, "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10, 10, 8, 8], "area": 64, "iscrowd": 0},
        ],
    }  # fmt: skip


def _write_dataset(root: Path, data: dict) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image in data["images"]:
        Image.new("RGB", (image["width"], image["height"]), (90, 120, 150)).save(root / "images" / image["file_name"])
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_round_trip_write_read_is_identical(tmp_path):
    path = _write_dataset(tmp_path / "src", _coco_dict())
    first = read_coco(path)
    assert [i.file_name for i in first.images] == ["a.png", "b.png", "c.png"]
    assert first.class_names == ["cat", "dog"] and first.label_of(5) == 1
    assert first.image_dir == tmp_path / "src" / "images"
    out = write_coco(first, tmp_path / "src" / "copy.json")
    second = read_coco(out, tmp_path / "src" / "images")
    assert second == first
    assert second.to_dict() == _coco_dict()
    assert json.loads(out.read_text()) == _coco_dict()


def test_cocoeval_of_ground_truth_as_predictions_is_perfect(tmp_path):
    dataset = read_coco(_write_dataset(tmp_path, _coco_dict()))
    results = []
    for image in dataset.images:
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in image.annotations)]
        cats = [a.category_id for a in image.annotations]
        results += detections_to_results(image.id, np.array(boxes).reshape(-1, 4), [1.0] * len(cats), cats)
    path = write_coco_results(results, tmp_path / "predictions.json")
    metrics = evaluate_coco(dataset, path)
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["mAP50"] == pytest.approx(1.0)
    # moving every box by half its width drops the IoU to 1/3: nothing counts at IoU 0.5
    shifted = [dict(r, bbox=[r["bbox"][0] + r["bbox"][2] / 2, *r["bbox"][1:]]) for r in results]
    assert evaluate_coco(dataset, shifted)["mAP50"] == pytest.approx(0.0)
    assert evaluate_coco(dataset, [])["mAP"] == 0.0


def test_box_outside_image_is_clipped_or_reported(tmp_path, caplog):
    data = _coco_dict()
    data["annotations"][1]["bbox"] = [30, 4, 15, 20]  # x + w = 45 > width 40
    path = _write_dataset(tmp_path, data)
    clipped = read_coco(path)
    assert clipped.clipped == 1 and clipped.images[0].annotations[1].bbox == (30, 4, 10, 20)
    assert clipped.images[0].annotations[1].area == 200
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        skipped = read_coco(path, boxes_outside="report", on_error="skip")
    assert len(skipped.skipped) == 1 and len(skipped.images[0].annotations) == 1
    where, reason = skipped.skipped[0]
    assert where == f"{path}: annotation 2 on image a.png"
    assert reason == "box [30, 4, 15, 20] extends outside the 40x30 image"
    assert "1 COCO entr(y/ies)" in caplog.text
    with pytest.raises(DataError, match=r"instances\.json: annotation 2 on image a\.png: box .* extends outside"):
        read_coco(path, boxes_outside="report", on_error="fail")


def test_unknown_category_and_empty_box_are_reported(tmp_path):
    data = _coco_dict()
    data["annotations"][2]["category_id"] = 99
    data["annotations"][3]["bbox"] = [10, 10, 0, 8]
    path = _write_dataset(tmp_path, data)
    with pytest.raises(DataError, match=r"annotation 3 on image b\.png: unknown category_id 99 \(known: \[3, 5\]\)"):
        read_coco(path)
    dataset = read_coco(path, on_error="skip")
    assert [reason for _, reason in dataset.skipped] == [
        "unknown category_id 99 (known: [3, 5])",
        "empty box [10, 10, 0, 8] (width and height must be positive)",
    ]
    assert dataset.images[1].annotations == []


def test_missing_and_truncated_image_files_are_reported(tmp_path):
    path = _write_dataset(tmp_path, _coco_dict())
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DataError, match=r"images/b\.png: image file is missing \(image id 2 in instances\.json\)"):
        read_coco(path)
    dataset = read_coco(path, on_error="skip")
    # the missing image is reported once; its two annotations go with it
    reason = "image file is missing (image id 2 in instances.json)"
    assert dataset.skipped == [(str(tmp_path / "images" / "b.png"), reason)]
    assert [i.id for i in dataset.images] == [1, 7]
    c_png = tmp_path / "images" / "c.png"
    c_png.write_bytes(c_png.read_bytes()[:-30])
    assert len(read_coco(path, on_error="skip", check_images="header").skipped) == 1
    decoded = read_coco(path, on_error="skip", check_images="decode")
    assert decoded.skipped[1][0] == str(c_png) and "truncated or corrupt" in decoded.skipped[1][1]
    Image.new("RGB", (21, 20)).save(c_png)
    assert read_coco(path, on_error="skip").skipped[1][1] == (
        "image is 21x20 but the COCO file says 20x20 (image id 7 in instances.json)"
    )


def test_malformed_files_fail_with_the_path(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"instances\.json: not valid JSON"):
        read_coco(bad)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match="missing the 'categories' list"):
        read_coco(bad)


def test_polygon_masks_and_detection_samples(tmp_path):
    dataset = read_coco(_write_dataset(tmp_path, _coco_dict()))
    image = dataset.images[0]
    mask = annotation_mask(image.annotations[0], image.height, image.width)
    assert mask.shape == (30, 40) and mask.sum() == pytest.approx(120, abs=25)
    assert mask[9, 7] == 1 and mask[25, 30] == 0
    labels = semantic_mask(dataset, image)
    assert labels[9, 7] == 1 and labels.max() == 1  # only "cat" (label 0 → 1) has a polygon
    square = np.zeros((30, 40), dtype=np.uint8)
    square[5:15, 10:30] = 1
    rle = rle_from_mask(square)
    json.dumps(rle)  # JSON-ready
    image.annotations[1].segmentation = rle
    assert np.array_equal(annotation_mask(image.annotations[1], 30, 40), square)
    sample = CocoDetection(dataset)[0]
    assert sample.image.shape == (3, 30, 40)
    assert sample.boxes.tolist() == [[2.0, 3.0, 12.0, 15.0], [20.5, 4.25, 35.5, 24.25]]
    assert sample.labels.tolist() == [0, 1] and sample.meta["image_id"] == 1
