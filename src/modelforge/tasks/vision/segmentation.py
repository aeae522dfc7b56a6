"""Semantic segmentation with a U-Net: per-pixel classes, scored with Dice and IoU per class.

Sources: ``medical-phantoms`` (generated DICOM scans with lesion masks), ``road-scenes`` (generated driving scenes),
``folder`` (the user's images with ``<name>_mask.png`` next to each; DICOM ``.dcm`` images are read with pydicom)
and ``coco`` (COCO polygons/RLE painted into class masks). The user's folders and COCO images are read per item
from disk (data/lazy_segmentation.py; mean, std and class fractions from up to 512 evenly spaced training pairs;
DICOM scans scaled by the largest stored value, found in one streaming pass; under torchrun each rank decodes only its
share of both); the generated sources are drawn into memory. With ``image_size`` both images and masks are resized
to a square (masks by nearest neighbour, so class indices stay exact), and a prediction is resized back to the input
picture's own size.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.errors import DataError
from modelforge.core.registry import register
from modelforge.data.lazy_segmentation import PairStatistics
from modelforge.data.split_config import HeldOutSplitConfig, TestSize
from modelforge.tasks.base import PredictionPicture, ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import across_ranks, summed_in_order
from modelforge.tasks.vision.segmentation_metrics import confusion_matrix, segmentation_scores

Arrays = tuple[list[np.ndarray], list[np.ndarray]]


class SegmentationDataConfig(HeldOutSplitConfig):
    source: Literal["medical-phantoms", "road-scenes", "folder", "coco"] = "medical-phantoms"
    path: Optional[str] = Field(None, description="folder: image+mask folder (or one with train/ val/ test/); "
                                                  "coco: the image folder")  # fmt: skip
    annotations: Optional[str] = Field(None, description="coco: the instances.json with polygon segmentations")
    image_size: Optional[int] = Field(None, ge=8, description="square side: medical-phantoms are drawn at it "
                                      "(default 128), other sources resized to it (default: road-scenes 96x128, "
                                      "folder/coco 128)")  # fmt: skip
    channels: Optional[Literal[1, 3]] = Field(None, description="1 = grayscale, 3 = RGB (default: the source's)")
    num_train: Optional[int] = Field(None, ge=1, description="generated sources: training images")
    num_val: Optional[int] = Field(None, ge=1, description="generated sources: validation images")
    num_test: Optional[int] = Field(None, ge=1, description="generated sources: test images")
    test_size: TestSize = 0.1  # folder/coco without splits
    flip: bool = Field(False, description="augmentation: random horizontal flips while training")
    dice_loss: bool = Field(True, description="add a soft Dice loss on the non-background classes to cross-entropy")
    on_error: Literal["skip", "fail"] = Field("skip", description="bad images/masks: skip (counted) or fail")


def _hold_out(images: list, masks: list, size: float, seed: int) -> tuple[Arrays, Arrays]:
    count = int(round(size * len(images))) if size < 1 else int(size)
    if not 0 <= count < len(images):
        raise DataError(f"cannot hold out {count} of {len(images)} images; lower data.val_size/data.test_size")
    held = set(np.random.default_rng(seed).permutation(len(images))[:count].tolist())
    keep = [i for i in range(len(images)) if i not in held]
    pick = sorted(held)
    return ([images[i] for i in keep], [masks[i] for i in keep]), ([images[i] for i in pick], [masks[i] for i in pick])


def _largest(read: Any, paths: list[Path]) -> float:
    """The largest value in any of the files ``read`` decodes, one at a time; under torchrun each rank reads only its
    share of them (data/lazy_images.rows_over_ranks)."""
    from modelforge.data.lazy_images import rows_over_ranks

    rows = rows_over_ranks(np.arange(len(paths)), lambda index: [float(read(paths[index]).max())])
    return max((value for value, in rows), default=0.0)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 − mean soft Dice over the non-background classes, with the batch's pixels pooled (stable for small
    objects: an image without lesions does not divide by zero)."""
    probs = logits.float().softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).float()[:, 1:]
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + 1) / (total + 1)).mean()


@register("task", "segmentation")
class Segmentation(Task):
    """Label every pixel (U-Net; Dice and IoU per class)."""

    name = "segmentation"
    DataConfig = SegmentationDataConfig
    input_kind = "image"
    evaluation_gathers_ranks = True  # evaluate gathers its batch sums and confusion matrix once (across_ranks)

    # ---- data -------------------------------------------------------------------------------------------------
    def _generated(self) -> tuple[dict[str, Arrays], list[str], float]:
        cfg = self.data_cfg
        sizes = {k: v for k, v in (("num_train", cfg.num_train), ("num_val", cfg.num_val),
                                   ("num_test", cfg.num_test)) if v is not None}  # fmt: skip
        if cfg.source == "medical-phantoms":
            from modelforge.data.builtin.phantoms import CLASS_NAMES, MAX_VALUE, load_phantoms

            if cfg.image_size:  # phantoms are drawn at the asked size rather than resized
                sizes["image_size"] = cfg.image_size
            parts = {s: load_phantoms(s, **sizes) for s in ("train", "val", "test")}
            # load_phantoms already scaled to [0, 1]; keep the 12-bit scale for DICOM inputs at predict time
            arrays = {s: (list(p["images"]), list(p["masks"])) for s, p in parts.items()}
            return arrays, list(CLASS_NAMES), float(MAX_VALUE)
        from modelforge.data.builtin.road_scenes import CLASS_NAMES, load_road_scenes

        parts = {s: load_road_scenes(s, **sizes) for s in ("train", "val", "test")}
        return {s: (list(p["images"]), list(p["masks"])) for s, p in parts.items()}, list(CLASS_NAMES), 255.0

    def _folder(self) -> tuple[dict[str, Arrays], list[str], float]:
        from modelforge.data.builtin.phantoms import read_dicom
        from modelforge.data.formats.segmentation_folder import read_segmentation_folder

        cfg = self.data_cfg
        if not cfg.path:
            raise DataError("data.source=folder needs data.path=DIR (images with <name>_mask.png masks beside them)")
        root = Path(cfg.path).expanduser()
        folders = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()} or {"all": root}
        parts, names = {}, None
        dicom = any(f.is_dir() and any(p.suffix.lower() == ".dcm" for p in f.iterdir()) for f in folders.values())
        for split, folder in folders.items():
            options = {"image_suffixes": (".dcm",), "image_reader": read_dicom} if dicom else {}
            checked = read_segmentation_folder(folder, on_error=cfg.on_error, **options)
            self._skipped += len(checked.skipped)
            parts[split] = ([image for image, _ in checked.pairs], [mask for _, mask in checked.pairs])
            names = names or checked.class_names
        if names is None:
            from modelforge.data.formats.segmentation_folder import read_mask

            top = _largest(read_mask, [m for _, split_masks in parts.values() for m in split_masks])
            names = ["background"] + [f"class_{i}" for i in range(1, max(int(top), 1) + 1)]
        value_max = 255.0
        if dicom:  # scans are scaled by the largest value stored in any of them: one streaming pass, nothing kept
            value_max = max(1.0, _largest(read_dicom, [image for images, _ in parts.values() for image in images]))
        return parts, list(names), value_max

    def _coco(self) -> tuple[dict[str, Arrays], list[str], float]:
        from modelforge.data.formats.coco import read_coco

        cfg = self.data_cfg
        if not cfg.annotations:
            raise DataError("data.source=coco needs data.annotations=FILE.json with polygon segmentations")
        image_dir = Path(cfg.path).expanduser() if cfg.path else None
        coco = read_coco(Path(cfg.annotations).expanduser(), image_dir, on_error=cfg.on_error, check_images="decode")
        self._skipped, self._coco_index = len(coco.skipped), coco
        return ({"all": ([coco.image_path(image) for image in coco.images], list(coco.images))},
                ["background", *coco.class_names], 255.0)

    def _tensors(self, images: list[np.ndarray], masks: list[np.ndarray], value_max: float,
                 size: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float (N, C, H, W) images in [0, 1] and uint8 (N, H, W) masks, resized to ``size`` when given."""
        from modelforge.data.lazy_segmentation import pair_tensors

        out_x, out_y = zip(*(pair_tensors(image, mask, value_max, size) for image, mask in zip(images, masks,
                                                                                               strict=True)))
        shapes = {tuple(x.shape) for x in out_x}
        if len(shapes) > 1:
            raise DataError(f"images come in several sizes {sorted(shapes)[:3]}; set data.image_size to resize them")
        return torch.stack(out_x), torch.stack(out_y).to(torch.uint8)

    def _memory_sets(self, parts: dict[str, Arrays], names: list[str], value_max: float,
                     size: tuple[int, int] | None) -> tuple[dict[str, Any], PairStatistics]:
        """In-memory splits; the statistics of the whole training split."""
        from modelforge.data.tensors import TensorDataset

        cfg = self.data_cfg
        tensors = {s: self._tensors(*arrays, value_max, size) for s, arrays in parts.items() if arrays[0]}
        channels = cfg.channels or int(tensors["train"][0].shape[1])
        if channels == 1 and tensors["train"][0].shape[1] == 3:
            tensors = {s: (x.mean(1, keepdim=True), y) for s, (x, y) in tensors.items()}
        if channels == 3 and tensors["train"][0].shape[1] == 1:
            tensors = {s: (x.expand(-1, 3, -1, -1).contiguous(), y) for s, (x, y) in tensors.items()}
        top = max(int(y.max()) for _, y in tensors.values())
        if top >= len(names):
            raise DataError(f"masks hold class index {top} but only {len(names)} classes are named")
        return {s: TensorDataset(*t) for s, t in tensors.items()}, PairStatistics.of_tensors(*tensors["train"])

    def _lazy_sets(self, parts: dict[str, tuple[list[Path], list[Any]]], size: tuple[int, int], value_max: float
                   ) -> tuple[dict[str, Any], PairStatistics]:
        """Splits read per item from disk; the statistics of up to 512 evenly spaced training pairs (each rank's
        share decoded under torchrun). Class indices were checked while the folder was read (a COCO mask holds only
        its categories)."""
        from modelforge.data.lazy_images import STATISTICS_SAMPLE
        from modelforge.data.lazy_segmentation import SegmentationFileSet

        channels = self.data_cfg.channels
        first = next(iter(parts.values()))[0][0]
        mode = "L" if channels == 1 or (channels is None and Path(first).suffix.lower() == ".dcm") else "RGB"
        sets = {s: SegmentationFileSet(list(zip(*paths)), mode, size, value_max, self._coco_index)
                for s, paths in parts.items() if paths[0]}
        return sets, PairStatistics.of_sample(sets["train"], STATISTICS_SAMPLE)

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        self._skipped, self._coco_index = 0, None
        if cfg.source in ("medical-phantoms", "road-scenes"):
            parts, names, value_max = self._generated()
        elif cfg.source == "folder":
            parts, names, value_max = self._folder()
        else:
            parts, names, value_max = self._coco()
        read_splits = list(parts)
        if "all" in parts:
            parts["train"] = parts.pop("all")
        if "test" not in parts and cfg.test_size > 0:  # no test split of its own (train/ + val/ too): a share of train
            parts["train"], parts["test"] = _hold_out(*parts["train"], cfg.test_size, cfg.split_seed)
        if "val" not in parts and cfg.val_size > 0:
            parts["train"], parts["val"] = _hold_out(*parts["train"], cfg.val_size, cfg.split_seed + 1)
        if cfg.limit:
            parts["train"] = tuple(a[: cfg.limit] for a in parts["train"])
        side = cfg.image_size or (128 if cfg.source in ("folder", "coco") else None)
        size = (side, side) if side else None
        if cfg.source in ("folder", "coco"):  # the user's files: read per item
            sets, stats = self._lazy_sets(parts, size, value_max)
        else:
            sets, stats = self._memory_sets(parts, names, value_max, size)
        self.state_dict_ = {"labels": names, "channels": stats.channels, "image_size": stats.image_size,
                            "value_max": value_max, "mean": stats.mean, "std": stats.std}
        summary: dict[str, Any] = {f"{s}_size": len(d) for s, d in sets.items()}
        class_pixels = np.zeros(len(names), dtype=np.int64)
        class_pixels[: len(stats.class_pixels)] = stats.class_pixels
        fractions = class_pixels / stats.class_pixels.sum()
        summary.update(classes=names, image_shape=[stats.channels, *stats.image_size], skipped=self._skipped,
                       train_class_fractions={n: round(float(f), 4) for n, f in zip(names, fractions, strict=True)})
        if cfg.source in ("folder", "coco"):
            from modelforge.data.found import split_folders_found

            where = cfg.path if cfg.source == "folder" else cfg.annotations
            summary["found"] = split_folders_found(
                f"{where} ({'images with masks' if cfg.source == 'folder' else 'COCO'})", where, read_splits,
                {s: len(d) for s, d in sets.items()}, detail=f"{len(names)} classes ({', '.join(names)})")
        return Splits(sets["train"], sets.get("val"), sets.get("test"), summary)

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        return {"num_classes": len(self.labels), "in_channels": self.state_dict_["channels"]}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.state_dict_["mean"], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.state_dict_["std"], device=x.device).view(1, -1, 1, 1)
        return (x.float() - mean) / std

    # ---- training ---------------------------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), y)
        return loss + soft_dice_loss(logits, y) if self.data_cfg.dice_loss else loss

    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        x, y = batch
        x, y = self.normalize(x), y.long()
        if self.data_cfg.flip:  # mirror a random half of the batch (global torch RNG: resumable)
            flip = (torch.rand(len(x), device=x.device) < 0.5).view(-1, 1, 1)
            x = torch.where(flip[:, None], x.flip(-1), x)
            y = torch.where(flip, y.flip(-1), y)
        return StepOutput(self._loss(model(x), y))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        """Mean loss over the images, Dice/IoU from the pixel confusion matrix summed over the split (inside
        ``gathering_ranks()``: every rank's batch sums and confusion matrix gathered first)."""
        classes = len(self.labels)
        confusion = np.zeros((classes, classes), dtype=np.int64)
        batch_losses, batch_sizes = [], []  # per batch: loss × images, images
        for x, y in loader:
            y = y.long()
            logits = model(self.normalize(x))
            batch_losses.append(float(self._loss(logits, y)) * len(x))
            batch_sizes.append(len(x))
            confusion += confusion_matrix(logits.argmax(1), y, classes)
        losses, sizes, confusions = across_ranks(np.array(batch_losses, dtype=np.float64),
                                                 np.array(batch_sizes, dtype=np.int64), confusion[None])
        count = int(sizes.sum())
        return {"loss": summed_in_order(losses) / max(count, 1), **segmentation_scores(confusions.sum(0), self.labels)}

    # ---- report -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples | None:
        from modelforge.tasks.vision.vision_drawing import colour_mask, panel_grid, png_bytes

        dataset = splits.test if splits.test is not None else splits.val
        if dataset is None or len(dataset) == 0 or count <= 0:
            return ReportSamples(note="no test or validation images to show")
        x, y = dataset.get_batch(torch.arange(min(count, len(dataset), 6)))
        was_training = model.training
        model.eval()
        try:
            pred = model(self.normalize(x)).argmax(1)
        finally:
            model.train(was_training)
        rows = [[image.numpy(), colour_mask(t.numpy()), colour_mask(p.numpy())] for image, t, p in zip(x, y, pred)]
        png = png_bytes(panel_grid(rows, ["image", "true mask", "predicted mask"], scale=2))
        return ReportSamples(png=png, note="held-out images, their true masks and the predicted masks")

    # ---- serving ----------------------------------------------------------------------------------------------
    def input_spec(self) -> dict[str, Any]:
        s = self.state_dict_
        return {"kind": "image", "channels": s["channels"], "image_size": s["image_size"], "labels": s["labels"]}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        s = self.state_dict_
        return {"image": torch.randn(batch_size, s["channels"], *s["image_size"])}

    def preprocess(self, inputs: list[Any]) -> dict[str, Any]:
        from modelforge.tasks.vision.image_inputs import read_image_input

        s = self.state_dict_
        images, sizes = [], []
        for item in inputs:
            pixels = read_image_input(item, "L" if s["channels"] == 1 else "RGB")
            blank = np.zeros(pixels.shape[:2], np.int64)
            x, _ = self._tensors([pixels], [blank], s["value_max"], tuple(s["image_size"]))
            if x.shape[1] != s["channels"]:
                x = x.mean(1, keepdim=True) if s["channels"] == 1 else x.expand(-1, 3, -1, -1)
            images.append(x[0])
            sizes.append(tuple(pixels.shape[:2]))
        return {"image": self.normalize(torch.stack(images)), "sizes": sizes}

    def forward(self, model: nn.Module, batch: Any) -> Any:
        return {"logits": model(batch["image"]), "sizes": batch["sizes"]}

    def postprocess(self, outputs: Any) -> list[dict[str, Any]]:
        """Per image: the class-index mask as a base64 palette PNG at the input's size, and each class's share."""
        import io

        from PIL import Image

        from modelforge.data.formats.segmentation_folder import default_palette

        results = []
        for logits, size in zip(outputs["logits"], outputs["sizes"], strict=True):
            mask = logits.float().argmax(0)
            if tuple(mask.shape) != tuple(size):
                mask = F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0].long()
            mask_np = mask.cpu().numpy().astype(np.uint8)
            picture = Image.fromarray(mask_np)
            picture.putpalette(default_palette())  # class indices in the pixels, colours in the palette
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            counts = np.bincount(mask_np.ravel(), minlength=len(self.labels)) / mask_np.size
            results.append({
                "classes": {name: round(float(c), 4) for name, c in zip(self.labels, counts, strict=True)},
                "size": [int(size[0]), int(size[1])],
                "mask_png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            })  # fmt: skip
        return results

    def prediction_pictures(self, item: Any, result: dict[str, Any]) -> list[PredictionPicture]:
        """The mask (``<stem>.mask.png``: class indices, palette PNG; the JSON's ``mask`` instead of the inline
        ``mask_png``) and its colours over the input picture (``<stem>.pred.png``, the JSON's ``picture``)."""
        import io

        from PIL import Image

        from modelforge.tasks.vision.image_inputs import read_image_input
        from modelforge.tasks.vision.vision_drawing import overlay_mask, png_bytes

        raw = base64.b64decode(result["mask_png"])
        mask = np.asarray(Image.open(io.BytesIO(raw)))
        pixels = read_image_input(item, "RGB")
        if pixels.dtype != np.uint8:  # a DICOM scan: stretch its values to 8 bits for the picture
            pixels = np.clip(pixels.astype(np.float64) / max(float(pixels.max()), 1.0) * 255, 0, 255).astype(np.uint8)
        overlay = png_bytes(Image.fromarray(overlay_mask(pixels, mask)))
        return [PredictionPicture("mask", "mask", raw, replaces="mask_png"),
                PredictionPicture("picture", "pred", overlay)]
