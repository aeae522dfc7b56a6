"""Image classification: MNIST, scikit-learn digits, or the user's images (an image folder, a Hugging Face dataset or
WebDataset shards) → any registered classifier."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from modelforge.core.errors import DataError
from modelforge.core.registry import register
from modelforge.data.class_splits import check_classifier_splits
from modelforge.data.split_config import HeldOutSplitConfig
from modelforge.data.splits import holdout_split
from modelforge.data.tensors import TensorDataset
from modelforge.tasks.base import ReportSamples, Splits, StepOutput, Task
from modelforge.tasks.metrics import classifier_evaluation, ranked_labels


def _holdout(n: int, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return holdout_split(n, size, seed, "samples")


class ImageDataConfig(HeldOutSplitConfig):
    source: Literal["mnist", "digits", "folder", "imagenet"] = Field(
        "mnist", description="imagenet: no training images; the 1,000 ImageNet labels for a pretrained network")
    path: Optional[str] = Field(None, description="folder source: root/<class>/<image> or root/{train,val,test}/…, "
                                              "a Hugging Face dataset or .tar shards")
    format: Optional[Literal["folder", "hf", "webdataset"]] = Field(
        None, description="folder source: what data.path holds (default: detected — a save_to_disk folder or "
                          ".parquet/.arrow files are hf, .tar shards webdataset, else an image folder)")
    image_column: Optional[str] = Field(
        None, description="hf: the image column (default: the datasets.Image one); webdataset: the image extension")
    label_column: Optional[str] = Field(
        None, description="hf: default the ClassLabel column or one named label/labels/cls; webdataset: the label "
                          "member's extension or .json field (default cls, txt, then json's label)")
    image_size: Optional[int] = Field(None, ge=8, description="square side after resizing (default: source's own)")
    channels: Optional[Literal[1, 3]] = Field(None, description="1 = grayscale, 3 = RGB (default: source's own)")
    shift: int = Field(0, ge=0, description="augmentation: random translation of up to N pixels while training")
    on_error: Literal["skip", "fail"] = Field("skip", description="unreadable image files: skip (counted) or fail")
    preprocessing: Literal["dataset", "imagenet"] = Field(
        "dataset", description="normalise with the training split's mean/std, or ImageNet's (pretrained networks)")


@register("task", "image_classification")
class ImageClassification(Task):
    """Classify images into labels (MNIST, sklearn digits or an image folder)."""

    name = "image_classification"
    explain_kind = "image"
    validation_metric = ("val_accuracy", "maximize")
    evaluation_gathers_ranks = True  # evaluate goes only through classifier_evaluation: a rank may take a share
    DataConfig = ImageDataConfig
    input_kind = "image"
    frame_result = "label"
    baseline = "pixels"

    # ---- data -------------------------------------------------------------------------------------------------
    def _load_source(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
        cfg = self.data_cfg
        if cfg.source == "mnist":
            from modelforge.data.builtin.mnist import load_mnist

            arrays = load_mnist()
            self._origins = {"train": "MNIST train", "test": "MNIST test"}
            parts = {
                "train": (arrays["train_images"][:, None], arrays["train_labels"]),
                "test": (arrays["test_images"][:, None], arrays["test_labels"]),
            }
            return parts, [str(i) for i in range(10)]
        if cfg.source == "digits":
            from sklearn.datasets import load_digits

            digits = load_digits()
            images = np.clip(np.rint(digits.images * 255 / 16), 0, 255).astype(np.uint8)[:, None]
            return {"all": (images, digits.target.astype(np.int64))}, [str(i) for i in range(10)]
        return self._load_folder()

    def _load_folder(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
        """The folder's index: per split, file paths relative to data.path (not pixels) and labels; the class names
        come from a synset map beside the folders when there is one (ImageNet's WordNet-id folders)."""
        from modelforge.data.formats.image_folder import index_image_folder, read_synset_names
        from modelforge.data.formats.records import detect_format

        cfg = self.data_cfg
        if not cfg.path:
            raise DataError("data.source=folder needs data.path=DIR (a folder of <class>/<image> sub-folders)")
        record_format = cfg.format or detect_format(cfg.path) or "folder"
        if record_format != "folder":
            return self._load_records(record_format)
        root = Path(cfg.path).expanduser()
        if (root / "train").is_dir():
            train = index_image_folder(root / "train", root, on_error=cfg.on_error)
            parts = {"train": (train.paths, train.labels)}
            self._origins = {"train": f"{root.name}/train"}
            for split in ("val", "test"):
                if (root / split).is_dir():
                    held = index_image_folder(root / split, root, train.classes, cfg.on_error)
                    parts[split], self._origins[split] = (held.paths, held.labels), f"{root.name}/{split}"
                    self.record_used(**{f"{split}_size": 0.0})  # a folder was given: no share held out
            return parts, read_synset_names(root, train.classes) or train.classes
        everything = index_image_folder(root, root, on_error=cfg.on_error)
        self._origins = {"train": root.name}
        return {"all": (everything.paths, everything.labels)}, read_synset_names(root, everything.classes) or \
            everything.classes

    def _load_records(self, record_format: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
        """A Hugging Face dataset or WebDataset shards: per split, the items' positions in the source (not pixels)
        and labels; the source's own val/test splits are kept, the rest held out as from a folder."""
        from modelforge.data.formats.image_records import index_image_records

        cfg = self.data_cfg
        records = index_image_records(cfg.path, record_format, cfg.image_column, cfg.label_column, cfg.on_error)
        self._records = records
        own = [split for split in ("val", "test") if split in records.parts]
        self.record_used(format=record_format, image_column=records.image_column,
                         label_column=records.label_column, **{f"{split}_size": 0.0 for split in own})
        name = Path(cfg.path).name
        self._origins = {"train": f"{name} (train)" if own else name, **{s: f"{name} ({s})" for s in own}}
        parts = dict(records.parts)
        if not own:  # one split: test and validation are held out of it, as from a folder without train/
            parts["all"] = parts.pop("train")
        return parts, records.classes

    def datasets(self) -> Splits:
        cfg = self.data_cfg
        if cfg.source == "imagenet":
            return self._imagenet_splits()
        parts, classes = self._load_source()
        if "all" in parts:
            parts["train"] = parts.pop("all")
        if "test" not in parts:  # no test/ folder or test split of its own (train/ + val/ too): a share of train
            images, labels = parts["train"]
            keep, test = _holdout(len(images), cfg.test_size, cfg.split_seed)
            parts["train"] = (images[keep], labels[keep])
            if len(test):  # data.test_size=0: no test split
                parts["test"] = (images[test], labels[test])
        if "val" not in parts and cfg.val_size > 0:
            images, labels = parts["train"]
            keep, val = _holdout(len(images), cfg.val_size, cfg.split_seed + 1)
            parts["train"], parts["val"] = (images[keep], labels[keep]), (images[val], labels[val])
        if cfg.limit:
            parts["train"] = tuple(a[: cfg.limit] for a in parts["train"])
        check_classifier_splits({k: v[1] for k, v in parts.items()}, classes, cfg.path or f"data.source={cfg.source}")
        if cfg.source == "folder":
            splits, shape, (mean, std) = self._lazy_splits(parts)
        else:
            tensors = {k: self._to_tensors(*v) for k, v in parts.items()}
            train_x = tensors["train"][0].float() / 255
            splits, shape = Splits.from_tensors(tensors, {}), list(train_x.shape[1:])
            mean, std = train_x.mean(dim=(0, 2, 3)).tolist(), train_x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
        previous = self.state_dict_  # a loaded run's state
        self.state_dict_ = {"labels": classes, "channels": shape[0], "image_size": shape[-1], "mean": mean, "std": std}
        if cfg.preprocessing == "imagenet":
            self._use_imagenet_statistics()
        self._use_checkpoint_statistics(previous)
        summary = {f"{k}_size": len(v[0]) for k, v in parts.items()}
        summary.update(classes=len(classes), image_shape=shape, found=self._found(parts, classes))
        splits.summary = summary
        return splits

    def _lazy_splits(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]
                     ) -> tuple[Splits, list[int], tuple[list[float], list[float]]]:
        """Splits read from disk per item (a folder's files, a dataset's rows or shard members); the mean/std from a
        spread sample of the training images."""
        from modelforge.data.first_touch import SkippedAtFirstTouch
        from modelforge.data.lazy_images import ImageFileDataset, channel_statistics, touch_sample

        cfg = self.data_cfg
        size, channels = cfg.image_size or 64, cfg.channels or 3
        records = getattr(self, "_records", None)
        if records is not None:  # positions in a Hugging Face dataset or in shards
            sets = {k: records.make(ids, labels, channels, size) for k, (ids, labels) in parts.items()}
        else:
            base = Path(cfg.path).expanduser()
            skips = SkippedAtFirstTouch(f"file(s) under {base}")  # one report for the three splits
            sets = {k: ImageFileDataset(base, paths, labels, channels, size, on_error=cfg.on_error, skips=skips)
                    for k, (paths, labels) in parts.items()}
        stats = channel_statistics(sets["train"])
        for held_out in ("val", "test"):
            if held_out in sets:
                touch_sample(sets[held_out])
        return Splits(sets["train"], sets.get("val"), sets.get("test")), [channels, size, size], stats

    def _use_checkpoint_statistics(self, previous: dict[str, Any]) -> None:
        """model.name=hf: normalise as the checkpoint's image processor does (a loaded run: as it was saved)."""
        if self.recipe.model.name != "hf":
            return
        from modelforge.models.hf_auto import image_statistics

        loaded = self.artifact_dir is not None
        stats = {k: previous[k] for k in ("mean", "std")} if loaded else image_statistics(self.recipe.model)
        self.state_dict_.update(stats)

    def _found(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str]) -> str:
        from modelforge.data.found import class_counts, found_line

        cfg = self.data_cfg
        origins = getattr(self, "_origins", {})
        base = origins.get("train", f"the {cfg.source} data")
        where = {"train": origins.get("train", f"{cfg.source} train split")}
        for split in ("val", "test"):
            where[split] = origins.get(split, f"split off {base}")
        read = f"{cfg.path} (one folder per class)" if cfg.source == "folder" else f"the built-in {cfg.source} data"
        records, detail = getattr(self, "_records", None), None
        if records is not None:
            read = f"{cfg.path} ({records.format}; image {records.image_column or 'member'}, label " \
                   f"{records.label_column or 'member'})"
            detail = f"{records.skipped} unreadable skipped" if records.skipped else None
        splits = {k: (len(parts[k][0]), where[k]) for k in ("train", "val", "test") if k in parts}
        return found_line(read, class_counts([classes[i] for i in parts["train"][1]], classes), splits, detail)

    def _to_tensors(self, images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images))
        size = self.data_cfg.image_size
        if size and x.shape[-1] != size:
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False)
            x = x.round().clamp(0, 255).to(torch.uint8)
        if self.data_cfg.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        return x, torch.from_numpy(labels)

    # ---- pretrained ImageNet networks ---------------------------------------------------------------------------
    def _imagenet_splits(self) -> Splits:
        """``data.source: imagenet``: no images to train on (the run trains zero steps), only what a pretrained
        ImageNet classifier needs to predict: its 1,000 labels and the standard evaluation preprocessing — shorter
        side to 256, centre crop 224 (``data.image_size``, with the resize scaled alike), ImageNet mean/std."""
        from modelforge.models.mobilenet import imagenet_classes

        cfg = self.data_cfg
        if cfg.channels == 1:
            raise DataError("data.source=imagenet: ImageNet networks take RGB images; drop data.channels=1")
        size = cfg.image_size or 224
        self.state_dict_ = {"labels": list(imagenet_classes()), "channels": 3, "image_size": size,
                            "resize": round(size * 256 / 224)}
        self._use_imagenet_statistics()
        empty = TensorDataset(torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
        summary = {"train_size": 0, "classes": len(self.labels), "image_shape": [3, size, size],
                   "note": "ImageNet labels only: nothing to train on (0 steps); the pretrained weights are the model"}
        test = self._imagenet_val(size, self.state_dict_["resize"]) if cfg.path else None
        if test is not None:
            summary.update(test_size=len(test), found=self._imagenet_found(test))
        return Splits(train=empty, test=test, summary=summary)

    def _imagenet_val(self, size: int, resize: int) -> Any:
        """``data.path``: an ImageNet-layout folder (``val/<wnid>/*.JPEG``, or the ``<wnid>`` folders themselves) as
        the test split, each folder scored as the network's output of its synset, each image read per item and
        prepared as predictions are (shorter side, centre crop)."""
        from modelforge.data.formats.image_folder import imagenet_class_order, index_image_folder
        from modelforge.data.lazy_images import ImageFileDataset

        root = Path(self.data_cfg.path).expanduser()
        if not root.is_dir():
            raise DataError(f"data.path={root}: no such folder (an ImageNet layout: val/<wnid>/*.JPEG)")
        folder = root / "val" if (root / "val").is_dir() else root
        index = index_image_folder(folder, folder, imagenet_class_order(folder, len(self.labels)),
                                   on_error=self.data_cfg.on_error)
        self._imagenet_folder, self._imagenet_skipped = folder, len(index.skipped)
        return ImageFileDataset(folder, index.paths, index.labels, 3, size, resize=resize,
                                on_error=self.data_cfg.on_error)

    def _imagenet_found(self, test: Any) -> str:
        from modelforge.data.found import found_line

        classes = len(set(test.labels.tolist()))
        skipped = f", {self._imagenet_skipped} unreadable skipped" if self._imagenet_skipped else ""
        return found_line(f"{self._imagenet_folder} (ImageNet layout: one folder per synset)", None,
                          {"test": (len(test), "the folder, scored by the pretrained network")},
                          detail=f"{classes} of the {len(self.labels)} ImageNet classes{skipped}")

    def _use_imagenet_statistics(self) -> None:
        from modelforge.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        if self.state_dict_["channels"] != 3:
            raise DataError("data.preprocessing=imagenet needs RGB images: set data.channels=3")
        self.state_dict_.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))

    def _decode_center_crop(self, item: Any) -> np.ndarray:
        """A photo → (3, size, size) uint8 the ImageNet way: shorter side to ``resize``, then the centre crop."""
        from PIL import Image

        from modelforge.data.transforms import load_image
        from modelforge.tasks.vision.image_inputs import image_decode_errors

        if isinstance(item, (str, Path)) and Path(item).is_file():
            image = load_image(item)
        elif isinstance(item, (bytes, bytearray)) or (isinstance(item, str) and len(item) > 256):
            raw = base64.b64decode(item, validate=True) if isinstance(item, str) else bytes(item)
            try:
                with Image.open(io.BytesIO(raw)) as img:
                    image = img.convert("RGB")
            except image_decode_errors() as exc:
                raise DataError(f"input is not a readable image: {exc}") from None
        else:
            raise DataError(f"cannot read image input {str(item)[:80]!r}: give a PNG/JPEG path or image bytes")
        from modelforge.data.formats.image_folder import decode_center_crop

        return decode_center_crop(image, self.state_dict_["image_size"], self.state_dict_["resize"])

    # ---- model ------------------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return self.state_dict_["labels"]

    def derived_model_kwargs(self) -> dict[str, Any]:
        s = self.state_dict_
        return {
            "num_classes": len(s["labels"]),
            "in_channels": s["channels"],
            "image_size": s["image_size"],
            "in_features": s["channels"] * s["image_size"] ** 2,
        }

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.state_dict_["mean"], device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.state_dict_["std"], device=x.device).view(1, -1, 1, 1)
        return (x.float() / 255 - mean) / std

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random translation by up to ``shift`` pixels (uses the global torch RNG, so resume stays exact)."""
        shift = self.data_cfg.shift
        n, _, h, w = x.shape
        offsets = torch.randint(-shift, shift + 1, (n, 2), device=x.device).float()
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2] = offsets[:, 0] * 2 / w
        theta[:, 1, 2] = offsets[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)

    # ---- training ---------------------------------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any) -> StepOutput:
        x, y = batch
        x = self.normalize(x)
        if self.data_cfg.shift:
            x = self._augment(x)
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any) -> dict[str, Any]:
        return classifier_evaluation(((model(self.normalize(x)), y) for x, y in loader), len(self.labels))

    # ---- report -----------------------------------------------------------------------------------------------
    def report_samples(self, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
        """A grid of held-out images titled with the predicted (and true) label, green when right, red when wrong."""
        from modelforge.render import plots, samples

        _, dataset = samples.held_out(splits)
        if dataset is None:
            return ReportSamples(note="the recipe has no test or validation split")
        pairs = [dataset[i] for i in samples.spread(len(dataset), count)]
        images = np.stack([np.asarray(x, dtype=np.uint8) for x, _ in pairs])
        results = self.postprocess(self.forward(model, self.preprocess(list(images))))
        truths = [self.labels[int(y)] if int(y) < len(self.labels) else str(int(y)) for _, y in pairs]
        titles = [f"{r['label']} (true {t})" for r, t in zip(results, truths)]
        return ReportSamples(png=plots.image_grid(images, titles, [r["label"] == t for r, t in zip(results, truths)]))

    # ---- serving ----------------------------------------------------------------------------------------------
    def _decode(self, item: Any) -> np.ndarray:
        from modelforge.data.formats.image_folder import decode_image
        from modelforge.tasks.vision.image_inputs import resized_from_bytes

        channels, size = self.state_dict_["channels"], self.state_dict_["image_size"]
        if "resize" in self.state_dict_ and not isinstance(item, np.ndarray):
            return self._decode_center_crop(item)
        if isinstance(item, (str, Path)) and Path(item).is_file():
            return decode_image(Path(item), channels, size)
        if isinstance(item, (bytes, bytearray)) or (isinstance(item, str) and len(item) > 256):
            raw = base64.b64decode(item, validate=True) if isinstance(item, str) else bytes(item)
            return resized_from_bytes(raw, channels, size)
        if isinstance(item, np.ndarray):
            return item.reshape(channels, size, size).astype(np.uint8)
        raise DataError(f"cannot read image input {str(item)[:80]!r}: give a PNG/JPEG path or image bytes")

    def input_spec(self) -> dict[str, Any]:
        s = self.state_dict_
        return {"kind": "image", "channels": s["channels"], "image_size": s["image_size"]}

    def example_inputs(self, batch_size: int = 2) -> dict[str, torch.Tensor]:
        s = self.state_dict_
        return {"image": torch.randn(batch_size, s["channels"], s["image_size"], s["image_size"])}

    def preprocess(self, inputs: list[Any]) -> torch.Tensor:
        return self.normalize(torch.from_numpy(np.stack([self._decode(item) for item in inputs])))

    def postprocess(self, outputs: torch.Tensor, top_k: int = 5) -> list[dict[str, Any]]:
        return ranked_labels(outputs, self.labels, top_k)
