"""Object detection on COCO-format data with the CenterNet detector; scored with pycocotools' COCOeval.

Sources: ``scenes-digits`` (generated MNIST digits and shapes on clutter, written as a real COCO dataset on disk)
or ``coco`` (the user's ``instances.json`` + image folder, or a folder of ``train/ val/ test/`` COCO splits).
Images are letterboxed to ``image_size`` (aspect kept, padded with grey) as uint8 — the generated scenes once, into
memory; the user's COCO images per item from disk (``CocoImageSet``: the annotation file is indexed, each image
checked against its JSON size — decoded once to find truncated files, or with ``data.check_images=header`` only its
header — and the pixels decoded by the DataLoader workers while training); ground truth for evaluation stays in
each image's original pixel coordinates, and predictions are mapped back there before COCOeval scores them, so the
reported mAP is the one COCO's own tools would report on the original files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from modelforge.core.errors import DataError
from modelforge.core.registry import register
from modelforge.data.formats.coco import (
    CocoAnnotation,
    CocoCategory,
    CocoDataset,
    CocoImage,
    detections_to_results,
    evaluate_coco,
)
from modelforge.data.split_config import HeldOutSplitConfig, TestSize
from modelforge.models.detector import CenterNet
from modelforge.tasks.base import PredictionPicture, ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.vision.detection_targets import centernet_loss, decode, encode_targets

STRIDE = CenterNet.stride
EVAL_SCORE_THRESHOLD = 0.01  # COCOeval needs the low-score tail to trace the whole precision/recall curve
# what evaluate keeps of one image: width, height, ground truth (category id, xywh, area, crowd), the detections'
# xyxy boxes in its original pixels, their scores and category ids
SeenImage = tuple[int, int, list[tuple[int, list[float], float, int]], np.ndarray, list[float], list[int]]


class DetectionDataConfig(HeldOutSplitConfig):
    source: Literal["scenes-digits", "coco"] = "scenes-digits"
    annotations: Optional[str] = Field(
        None, description="coco: an instances.json file, or a folder with train/ val/ test/ each holding one"
    )
    path: Optional[str] = Field(None, description="coco: the image folder (default: images/ beside the JSON file)")
    image_size: int = Field(128, ge=32, description="square network input side; images are letterboxed to it")
    num_train: int = Field(4000, ge=1, description="scenes-digits: generated training scenes")
    num_val: int = Field(500, ge=1, description="scenes-digits: generated validation scenes")
    num_test: int = Field(500, ge=1, description="scenes-digits: generated test scenes")
    shapes: bool = Field(True, description="scenes-digits: add circle/square/triangle classes to the ten digits")
    scene_seed: int = Field(0, description="scenes-digits: generator seed")
    test_size: TestSize = 0.1  # coco with one file (scenes-digits generates its splits)
    flip: bool = Field(False, description="augmentation: random horizontal flips (not for digits: a flipped 2 is no 2)")
    on_error: Literal["skip", "fail"] = Field("skip", description="bad images/annotations: skip (counted) or fail")
    check_images: Literal["decode", "header"] = Field(
        "decode", description="coco: before training, decode every image to find truncated files, or read only its "
                              "header (a large set starts at once; a truncated file stops the run when it is reached)")
    boxes_outside: Literal["clip", "report"] = Field("clip", description="boxes past the image edge: clip or report")
    score_threshold: float = Field(0.3, ge=0, le=1, description="predict/serve: lowest score of a returned box")
    nms_iou: float = Field(0.5, gt=0, le=1, description="per-class NMS IoU threshold after peak extraction")
    max_detections: int = Field(100, ge=1, description="boxes kept per image (COCOeval's maxDets is 100)")


class DetectionSet(Dataset):
    """Letterboxed uint8 images with xyxy boxes (input pixels) and labels; ``records`` keep each image's original
    size, letterbox and COCO ground truth for evaluation."""

    def __init__(self, images: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor],
                 records: list[dict[str, Any]]):
        self.images, self.boxes, self.labels, self.records = images, boxes, labels, records

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get_batch(torch.tensor([index]))

    def get_batch(self, indices: torch.Tensor) -> dict[str, Any]:
        order = indices.tolist()
        return {
            "image": self.images[indices],
            "boxes": [self.boxes[i] for i in order],
            "labels": [self.labels[i] for i in order],
            "records": [self.records[i] for i in order],
        }


class CocoImageSet(Dataset):
    """The user's COCO images read from disk one at a time: items (and ``get_batch``) as ``DetectionSet``'s."""

    loads_from_disk = True  # DataLoader workers by default (training/batches.py)

    def __init__(self, coco: CocoDataset, image_size: int):
        self.coco, self.image_size = coco, image_size

    def __len__(self) -> int:
        return len(self.coco.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from modelforge.data.transforms import Letterbox

        image, boxes, labels, record = _letterboxed(self.coco, self.coco.images[index], Letterbox(self.image_size,
                                                                                                  fill=0.5))
        return {"image": image[None], "boxes": [boxes], "labels": [labels], "records": [record]}

    def get_batch(self, indices: Any) -> dict[str, Any]:
        return _collate([self[i] for i in torch.as_tensor(indices).tolist()])

    def objects(self) -> int:
        return sum(1 for image in self.coco.images for a in image.annotations if not a.iscrowd)


def _letterboxed(coco: CocoDataset, image: CocoImage, letterbox: Any
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """One COCO image letterboxed: uint8 pixels, xyxy boxes and labels of its non-crowd objects, its record."""
    from modelforge.data.transforms import Sample, load_image, to_tensor

    anns = [a for a in image.annotations if not a.iscrowd]
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in anns)], dtype=torch.float32)
    sample = Sample(image=to_tensor(load_image(coco.image_path(image), "RGB")), boxes=xyxy.reshape(-1, 4),
                    labels=torch.tensor([coco.label_of(a.category_id) for a in anns], dtype=torch.long))
    out = letterbox.apply(sample)
    record = {"width": image.width, "height": image.height, "letterbox": out.meta["letterbox"],
              "gt": [(a.category_id, list(a.bbox), a.area, a.iscrowd) for a in image.annotations]}
    return (out.image * 255).round().clamp(0, 255).to(torch.uint8), out.boxes, out.labels, record


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.cat([item["image"] for item in items]),
        **{key: [v for item in items for v in item[key]] for key in ("boxes", "labels", "records")},
    }


def _split_images(images: list[CocoImage], size: float, seed: int) -> tuple[list[CocoImage], list[CocoImage]]:
    count = int(round(size * len(images))) if size < 1 else int(size)
    if not 0 <= count < len(images):
        raise DataError(f"cannot hold out {count} of {len(images)} images; lower data.val_size/data.test_size")
    order = np.random.default_rng(seed).permutation(len(images))
    held = set(order[:count].tolist())
    return [im for i, im in enumerate(images) if i not in held], [im for i, im in enumerate(images) if i in held]


@register("task", "detection")
class Detection(Task):
    """Detect and classify objects (COCO format; CenterNet; COCOeval mAP)."""

    name = "detection"
    DataConfig = DetectionDataConfig
    input_kind = "image"
    frame_result = "boxes"
    evaluation_gathers_ranks = True  # evaluate gathers its batch sums and per-image boxes once (across_ranks)

    # ---- data -------------------------------------------------------------------------------------------------
    def _coco_splits(self) -> dict[str, CocoDataset]:
        from modelforge.data.formats.coco import read_coco

        cfg = self.data_cfg
        if cfg.source == "scenes-digits":
            from modelforge.data.builtin.scenes import SceneParams, scenes_digits

            params = SceneParams(num_train=cfg.num_train, num_val=cfg.num_val, num_test=cfg.num_test,
                                 image_size=cfg.image_size, shapes=cfg.shapes, seed=cfg.scene_seed)  # fmt: skip
            root = scenes_digits(params)
            return {s: read_coco(root / s / "instances.json", on_error="fail") for s in ("train", "val", "test")}
        if not cfg.annotations:
            raise DataError("data.source=coco needs data.annotations=FILE.json (or a folder with train/instances.json)")
        where = Path(cfg.annotations).expanduser()
        options = {"on_error": cfg.on_error, "boxes_outside": cfg.boxes_outside, "check_images": cfg.check_images}
        if where.is_dir():
            if not (where / "train" / "instances.json").is_file():
                raise DataError(f"{where}: a COCO dataset folder needs train/instances.json (and optional val/, test/)")
            return {s: read_coco(where / s / "instances.json", **options)
                    for s in ("train", "val", "test") if (where / s / "instances.json").is_file()}  # fmt: skip
        image_dir = Path(cfg.path).expanduser() if cfg.path else None
        if image_dir is not None and not image_dir.is_dir():
            raise DataError(f"data.path={cfg.path}: image folder does not exist")
        return {"all": read_coco(where, image_dir, **options)}

    def _hold_out(self, parts: dict[str, CocoDataset]) -> dict[str, CocoDataset]:
        from dataclasses import replace

        cfg = self.data_cfg
        if "all" in parts:
            parts["train"] = parts.pop("all")
        if "test" not in parts and cfg.test_size > 0:  # no test split of its own (train/ + val/ too): a share of train
            full = parts["train"]
            keep, test = _split_images(full.images, cfg.test_size, cfg.split_seed)
            parts["train"], parts["test"] = replace(full, images=keep), replace(full, images=test, skipped=[])
        if "val" not in parts and cfg.val_size > 0:
            keep, val = _split_images(parts["train"].images, cfg.val_size, cfg.split_seed + 1)
            parts["train"], parts["val"] = replace(parts["train"], images=keep), replace(parts["train"], images=val)
        return {k: v for k, v in parts.items() if v.images}

    def _to_set(self, coco: CocoDataset) -> DetectionSet | CocoImageSet:
        """The user's files: read per item from disk; the generated scenes: letterboxed once into memory."""
        from modelforge.data.transforms import Letterbox

        if self.data_cfg.source == "coco":
            return CocoImageSet(coco, self.data_cfg.image_size)
        letterbox = Letterbox(self.data_cfg.image_size, fill=0.5)
        images, boxes, labels, records = [], [], [], []
        for image in coco.images:
            pixels, xyxy, classes, record = _letterboxed(coco, image, letterbox)
            images.append(pixels)
            boxes.append(xyxy)
            labels.append(classes)
            records.append(record)
        return DetectionSet(torch.stack(images), boxes, labels, records)

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        read = self._coco_splits()
        # counted once per file read (the held-out splits below share the file's lists)
        problems = {"skipped": sum(len(c.skipped) for c in read.values()),
                    "clipped_boxes": sum(c.clipped for c in read.values())}
        read_splits = list(read)  # before _hold_out splits "all" (one annotations file) in its place
        parts = self._hold_out(read)
        if "train" not in parts:
            raise DataError("the COCO data has no usable training images (all were skipped; see the warnings)")
        train = parts["train"]
        if cfg.limit:
            from dataclasses import replace

            parts["train"] = train = replace(train, images=train.images[: cfg.limit])
        for split, coco in parts.items():
            if coco.category_ids != train.category_ids:
                raise DataError(f"the {split} split's COCO categories differ from the training split's")
        sets = {split: self._to_set(coco) for split, coco in parts.items()}
        mean, std = self._statistics(sets["train"])
        self.state_dict_ = {"labels": train.class_names, "category_ids": train.category_ids,
                            "image_size": cfg.image_size, "mean": mean, "std": std}
        summary: dict[str, Any] = {f"{k}_size": len(v) for k, v in sets.items()}
        summary.update(classes=len(train.class_names), image_size=cfg.image_size,
                       train_objects=self._objects(sets["train"]), **problems)  # fmt: skip
        if cfg.source == "coco":
            from modelforge.data.found import split_folders_found

            classes = len(train.class_names)
            summary["found"] = split_folders_found(
                f"{cfg.annotations} (COCO)", cfg.annotations, read_splits, {k: len(v) for k, v in sets.items()},
                detail=f"{classes} class{'es' if classes != 1 else ''}, {summary['train_objects']} training objects")
        return Splits(sets["train"], sets.get("val"), sets.get("test"), summary)

    @staticmethod
    def _statistics(dataset: DetectionSet | CocoImageSet) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the pixels / 255: over every image in memory; over up to 512 evenly spaced
        ones read from disk, each rank under torchrun decoding only its share (lazy_images.pixel_statistics)."""
        if isinstance(dataset, DetectionSet):
            pixels = dataset.images.float() / 255
            return pixels.mean(dim=(0, 2, 3)).tolist(), pixels.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
        from modelforge.data.lazy_images import pixel_statistics

        return pixel_statistics(lambda index: dataset[index]["image"][0], len(dataset), 3)

    @staticmethod
    def _objects(dataset: DetectionSet | CocoImageSet) -> int:
        return sum(len(b) for b in dataset.boxes) if isinstance(dataset, DetectionSet) else dataset.objects()

    def collate(self, items: list[Any]) -> Any:
        return _collate(items)

    def batch_size_of(self, batch: Any) -> int:
        return len(batch["image"])

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.labels), "in_channels": 3}

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.state_dict_["mean"], device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.state_dict_["std"], device=images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std

    def _flip(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mirror a random half of the batch (global torch RNG, so resume stays exact)."""
        images, boxes = batch["image"].clone(), list(batch["boxes"])
        width = images.shape[-1]
        for i in torch.nonzero(torch.rand(len(images)) < 0.5).flatten().tolist():
            images[i] = images[i].flip(-1)
            b = boxes[i]
            boxes[i] = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=-1)
        return images, boxes

    # ---- training ---------------------------------------------------------------------------------------------
    def _loss(self, outputs: dict[str, torch.Tensor], boxes: list[torch.Tensor],
              labels: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        targets = encode_targets(boxes, labels, len(self.labels), tuple(outputs["heatmap"].shape[-2:]), STRIDE)
        return centernet_loss(outputs, targets)

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        images, boxes = self._flip(batch) if self.data_cfg.flip else (batch["image"], batch["boxes"])
        loss, parts = self._loss(model(self.normalize(images)), boxes, batch["labels"])
        return StepOutput(loss, parts)

    def _decode(self, outputs: dict[str, torch.Tensor], threshold: float):
        cfg = self.data_cfg
        return decode(outputs, STRIDE, cfg.max_detections, threshold, cfg.nms_iou)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        """Mean loss over the images and COCOeval's mAP of the detections mapped back to each image's original pixels
        (inside ``gathering_ranks()``: every rank's batch sums and per-image ground truth and detections gathered
        first, then the images and annotations numbered over the whole split)."""
        from modelforge.data.boxes import clip_boxes
        from modelforge.data.transforms import unletterbox_boxes

        category_ids = self.state_dict_["category_ids"]
        seen: list[SeenImage] = []
        batch_losses, batch_sizes = [], []  # per batch: loss × images, images
        for batch in loader:
            outputs = model(self.normalize(batch["image"]))
            loss, _ = self._loss(outputs, batch["boxes"], batch["labels"])
            batch_losses.append(float(loss) * len(batch["image"]))
            batch_sizes.append(len(batch["image"]))
            for det, record in zip(self._decode(outputs, EVAL_SCORE_THRESHOLD), batch["records"], strict=True):
                boxes = clip_boxes(unletterbox_boxes(det.boxes.cpu(), record["letterbox"]),
                                   (record["height"], record["width"]))  # fmt: skip
                seen.append((record["width"], record["height"], record["gt"], np.asarray(boxes, dtype=np.float64),
                             det.scores.tolist(), [category_ids[i] for i in det.labels.tolist()]))
        losses, sizes, seen = across_ranks(np.array(batch_losses, dtype=np.float64),
                                           np.array(batch_sizes, dtype=np.int64), seen)
        stats = evaluate_coco(*self._coco_truth(seen))
        return {"loss": summed_in_order(losses) / max(int(sizes.sum()), 1), "map": stats["mAP"],
                "map50": stats["mAP50"], "map75": stats["mAP75"], "ar100": stats["AR100"]}  # fmt: skip

    def _coco_truth(self, seen: list[SeenImage]) -> tuple[CocoDataset, list[dict[str, Any]]]:
        """The evaluated images' ground truth as one COCO dataset and their detections as COCO results, from what
        evaluate saw of each image in split order: images numbered 1, 2, … and annotations 1, 2, … over the whole
        split, as one process evaluating every batch numbers them."""
        categories = [CocoCategory(cid, name) for cid, name in zip(self.state_dict_["category_ids"], self.labels,
                                                                   strict=True)]
        images: list[CocoImage] = []
        results: list[dict[str, Any]] = []
        annotations = 0
        for width, height, truth, boxes, scores, cats in seen:
            image = CocoImage(len(images) + 1, "", width, height)
            for category_id, bbox, area, crowd in truth:
                annotations += 1
                image.annotations.append(CocoAnnotation(annotations, image.id, category_id, tuple(bbox), area, crowd))
            images.append(image)
            results += detections_to_results(image.id, boxes, scores, cats)
        return CocoDataset(images, categories), results

    # ---- report -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        from modelforge.tasks.vision.vision_drawing import draw_detections, panel_grid, png_bytes

        dataset = splits.test if splits.test is not None else splits.val
        if dataset is None or len(dataset) == 0 or count <= 0:
            return ReportSamples(note="no test or validation images to show")
        picks = torch.arange(min(count, len(dataset), 8))
        batch = dataset.get_batch(picks)
        was_training = model.training
        model.eval()
        try:
            outputs = model(self.normalize(batch["image"]))
        finally:
            model.train(was_training)
        found = self.postprocess({**outputs, "meta": [None] * len(picks)})
        index = {name: i for i, name in enumerate(self.labels)}
        pictures = [draw_detections(img.permute(1, 2, 0).numpy(), r["boxes"], scale=2, class_index=index)
                    for img, r in zip(batch["image"], found, strict=True)]  # fmt: skip
        rows = [pictures[i : i + 4] for i in range(0, len(pictures), 4)]
        note = f"predicted boxes with score ≥ {self.data_cfg.score_threshold} on held-out images"
        return ReportSamples(png=png_bytes(panel_grid(rows, scale=1)), note=note)

    # ---- serving ----------------------------------------------------------------------------------------------
    def input_spec(self) -> dict[str, Any]:
        return {"kind": "image", "channels": 3, "image_size": self.state_dict_["image_size"], "labels": self.labels}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        size = self.state_dict_["image_size"]
        return {"image": torch.randn(batch_size, 3, size, size)}

    def preprocess(self, inputs: list[Any]) -> dict[str, Any]:
        from modelforge.data.transforms import Letterbox, Sample, to_tensor
        from modelforge.tasks.vision.image_inputs import read_image_input

        letterbox = Letterbox(self.state_dict_["image_size"], fill=0.5)
        images, meta = [], []
        for item in inputs:
            pixels = read_image_input(item, "RGB")
            if pixels.ndim == 2:
                pixels = np.stack([pixels] * 3, axis=-1)
            boxed = letterbox.apply(Sample(to_tensor(pixels)))
            images.append((boxed.image * 255).round().clamp(0, 255))
            meta.append({"letterbox": boxed.meta["letterbox"], "size": pixels.shape[:2]})
        return {"image": self.normalize(torch.stack(images)), "meta": meta}

    def forward(self, model: nn.Module, batch: Any) -> Any:
        return {**model(batch["image"]), "meta": batch["meta"]}

    def postprocess(self, outputs: Any) -> list[dict[str, Any]]:
        """Per image ``{"boxes": [{label, score, box: [x, y, w, h]}]}`` in the input image's pixels, best first."""
        from modelforge.data.boxes import clip_boxes
        from modelforge.data.transforms import unletterbox_boxes

        results = []
        for det, meta in zip(self._decode(outputs, self.data_cfg.score_threshold), outputs["meta"], strict=True):
            boxes = det.boxes.cpu()
            if meta is not None:  # None: boxes stay in network-input pixels (the report draws on those images)
                boxes = clip_boxes(unletterbox_boxes(boxes, meta["letterbox"]), tuple(meta["size"]))
            found = [
                {"label": self.labels[label], "score": round(score, 4),
                 "box": [round(v, 1) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])]}
                for b, score, label in zip(boxes.tolist(), det.scores.tolist(), det.labels.tolist(), strict=True)
            ]  # fmt: skip
            results.append({"boxes": found})
        return results

    def prediction_pictures(self, item: Any, result: dict[str, Any]) -> list[PredictionPicture]:
        """``result``'s boxes drawn on the input picture (``<stem>.pred.png``, the JSON's ``picture``)."""
        from modelforge.tasks.vision.image_inputs import read_image_input
        from modelforge.tasks.vision.vision_drawing import draw_detections, png_bytes

        pixels = read_image_input(item, "RGB")
        scale = max(1, 256 // max(pixels.shape[:2]))  # small pictures are enlarged so the tags stay readable
        index_of = {name: i for i, name in enumerate(self.labels)}
        picture = draw_detections(pixels, result["boxes"], scale=scale, class_index=index_of)
        return [PredictionPicture("picture", "pred", png_bytes(picture))]
