"""COCO object-detection format: an ``instances.json`` file plus a folder of images.

The JSON holds ``images`` (id, file_name, width, height), ``categories`` (id, name, supercategory) and
``annotations`` (id, image_id, category_id, bbox ``[x, y, width, height]`` in pixels from the top-left corner, area,
iscrowd, optional segmentation as polygons ``[[x1, y1, x2, y2, ...], ...]`` or RLE). Images are looked up under
``image_dir``: by default the ``images/`` folder next to the JSON file if there is one, else the JSON's own folder.
The generated ``scenes-digits`` dataset is written in this layout: ``<split>/instances.json`` + ``<split>/images/``.

Reading validates everything a training run would otherwise trip over deep inside a batch: unknown category or
image ids, empty boxes, boxes outside their image (clipped and counted, or reported), missing or unreadable image
files and image sizes that disagree with the JSON. Each problem names the file and the reason; with
``on_error="skip"`` the offending annotation (or image) is dropped and counted in ``CocoDataset.skipped``, with
``on_error="fail"`` the first one raises DataError. Under torchrun each rank checks only its contiguous share of the
image files and every rank goes on with the gathered outcomes, so all of them read the same dataset, problems and
first error as one process.

``evaluate_coco`` scores detections with pycocotools' COCOeval (mAP@[.5:.95], mAP@.5, ...).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from modelforge.core.atomic import atomic_write_json
from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.lazy_images import problems_over_ranks
from modelforge.data.transforms import Sample, Transform, image_size, load_image, to_tensor

log = logging.getLogger("modelforge.data")
OnError = Literal["skip", "fail"]
# COCO's own annotations overshoot the image edge by float rounding; that much is clipped without comment
_EDGE_TOLERANCE = 1e-3


@dataclass
class CocoCategory:
    id: int
    name: str
    supercategory: str = ""


@dataclass
class CocoAnnotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, width, height
    area: float
    iscrowd: int = 0
    segmentation: list[list[float]] | dict[str, Any] | None = None


@dataclass
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    annotations: list[CocoAnnotation] = field(default_factory=list)


@dataclass
class CocoDataset:
    """A parsed COCO file. ``skipped`` lists (path, reason) of dropped entries; ``clipped`` counts clipped boxes."""

    images: list[CocoImage]
    categories: list[CocoCategory]
    image_dir: Path | None = field(default=None, compare=False)
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list, compare=False)
    clipped: int = field(default=0, compare=False)

    @property
    def category_ids(self) -> list[int]:
        """Sorted category ids; a category's training label is its position in this list."""
        return sorted(c.id for c in self.categories)

    @property
    def class_names(self) -> list[str]:
        names = {c.id: c.name for c in self.categories}
        return [names[i] for i in self.category_ids]

    def label_of(self, category_id: int) -> int:
        return self.category_ids.index(category_id)

    def image_path(self, image: CocoImage) -> Path:
        return (self.image_dir or Path(".")) / image.file_name

    def to_dict(self) -> dict[str, Any]:
        """The COCO JSON structure (what pycocotools' ``COCO.dataset`` holds)."""
        annotations = []
        for image in self.images:
            for ann in image.annotations:
                entry = {
                    "id": ann.id,
                    "image_id": ann.image_id,
                    "category_id": ann.category_id,
                    "bbox": list(ann.bbox),
                    "area": ann.area,
                    "iscrowd": ann.iscrowd,
                }
                if ann.segmentation is not None:
                    entry["segmentation"] = ann.segmentation
                annotations.append(entry)
        return {
            "info": self.info,
            "images": [
                {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in self.images
            ],
            "annotations": annotations,
            "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in self.categories],
        }


class _Problems:
    """Collects (path, reason) pairs, or raises on the first one when on_error is "fail"."""

    def __init__(self, on_error: OnError):
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.on_error, self.items = on_error, []

    def add(self, where: str, reason: str) -> None:
        if self.on_error == "fail":
            raise DataError(f"{where}: {reason}")
        self.items.append((where, reason))

    def log(self, source: Path) -> None:
        for where, reason in self.items:
            log.warning("skipped %s: %s", where, reason)
        if self.items:
            log.warning("%d COCO entr(y/ies) in %s skipped (on_error=fail stops instead)", len(self.items), source)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(entry: Any, keys: dict[str, type | tuple[type, ...]]) -> str | None:
    """None when ``entry`` is a dict with each key of the given type, else the reason it is not."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    for key, kind in keys.items():
        if key not in entry:
            return f"missing key {key!r}"
        if not isinstance(entry[key], kind) or isinstance(entry[key], bool):
            return f"key {key!r} has {type(entry[key]).__name__} {entry[key]!r}, expected {kind}"
    return None


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO file is a JSON object, found {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the {key!r} list of a COCO instances file")
    return data


def _read_categories(path: Path, entries: list[Any]) -> list[CocoCategory]:
    categories: dict[int, CocoCategory] = {}
    for entry in entries:
        reason = _require(entry, {"id": int, "name": str})
        if reason:
            raise DataError(f"{path}: category {entry!r}: {reason}")
        if entry["id"] in categories:
            raise DataError(f"{path}: category id {entry['id']} appears twice")
        categories[entry["id"]] = CocoCategory(entry["id"], entry["name"], str(entry.get("supercategory", "")))
    if not categories:
        raise DataError(f"{path}: the categories list is empty")
    return list(categories.values())


def _check_image_file(file: Path, image: CocoImage, check_images: str) -> str | None:
    if not file.is_file():
        return "image file is missing"
    try:
        if check_images == "decode":
            size = load_image(file, mode=None).size
        else:
            size = image_size(file)
    except DataError as exc:
        return str(exc).removeprefix(f"{file}: ")
    if size != (image.width, image.height):
        return f"image is {size[0]}x{size[1]} but the COCO file says {image.width}x{image.height}"
    return None


def _image_entry_problem(entry: Any) -> str | None:
    """Why an ``images`` entry is unusable (missing or mistyped keys, a non-positive size), or None."""
    reason = _require(entry, {"id": int, "file_name": str, "width": int, "height": int})
    if reason is None and (entry["width"] <= 0 or entry["height"] <= 0):
        reason = f"non-positive size {entry['width']}x{entry['height']}"
    return reason


def _image_file_problems(
    entries: list[Any], image_dir: Path, check_images: str, on_error: OnError
) -> dict[int, str | None]:
    """Position in ``entries`` → what is wrong with that image's file (None: nothing), for every well-formed entry.

    Under torchrun each rank checks only its contiguous share of the files and the outcomes are gathered in order
    (``rows_over_ranks``), so every rank goes on with what one process finds. With ``on_error="fail"`` a rank stops
    at the first bad file of its share: the reader stops at the first problem anyway."""
    if check_images == "none":
        return {}
    checked = [at for at, entry in enumerate(entries) if _image_entry_problem(entry) is None]

    def problem(at: int) -> str | None:
        entry = entries[at]
        image = CocoImage(entry["id"], entry["file_name"], entry["width"], entry["height"])
        return _check_image_file(image_dir / image.file_name, image, check_images)

    return dict(zip(checked, problems_over_ranks(checked, problem, on_error), strict=True))


def _read_images(
    path: Path, entries: list[Any], image_dir: Path, check_images: str, problems: _Problems
) -> tuple[dict[int, CocoImage], set[int]]:
    """The readable images by id, and the ids of images dropped as problems (their annotations go with them)."""
    file_problems = _image_file_problems(entries, image_dir, check_images, problems.on_error)
    images: dict[int, CocoImage] = {}
    dropped: set[int] = set()
    for at, entry in enumerate(entries):
        reason = _image_entry_problem(entry)
        if reason:
            problems.add(f"{path}: image {entry!r}"[:300], reason)
            continue
        if entry["id"] in images:
            raise DataError(f"{path}: image id {entry['id']} appears twice")
        image = CocoImage(entry["id"], entry["file_name"], entry["width"], entry["height"])
        reason = file_problems.get(at)
        if reason:
            problems.add(str(image_dir / image.file_name), f"{reason} (image id {image.id} in {path.name})")
            dropped.add(image.id)
            continue
        images[image.id] = image
    return images, dropped


def _segmentation_problem(seg: Any) -> str | None:
    if isinstance(seg, list):
        for polygon in seg:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2 or not all(map(_number, polygon)):
                return "a segmentation polygon must be a list of at least 3 (x, y) number pairs"
        return None
    if isinstance(seg, dict) and "counts" in seg and isinstance(seg.get("size"), list):
        return None
    return "segmentation must be a list of polygons or an RLE object with counts and size"


def _fit_box(
    bbox: list[float], image: CocoImage, boxes_outside: str
) -> tuple[tuple[float, float, float, float] | None, str | None, bool]:
    """(clipped box, problem, was_clipped) for an [x, y, w, h] box on ``image``."""
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return None, f"empty box {bbox} (width and height must be positive)", False
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, image.width), min(y + h, image.height)
    if x2 <= x1 or y2 <= y1:
        return None, f"box {bbox} lies entirely outside the {image.width}x{image.height} image", False
    tol = _EDGE_TOLERANCE
    outside = x < -tol or y < -tol or x + w > image.width + tol or y + h > image.height + tol
    if outside and boxes_outside == "report":
        return None, f"box {bbox} extends outside the {image.width}x{image.height} image", False
    if (x1, y1, x2, y2) == (x, y, x + w, y + h):
        return (x, y, w, h), None, False  # untouched, so a round trip keeps the exact floats
    return (x1, y1, x2 - x1, y2 - y1), None, outside


def _read_annotation(
    entry: Any, images: dict[int, CocoImage], category_ids: set[int], boxes_outside: str
) -> tuple[CocoAnnotation | None, str | None, bool]:
    reason = _require(entry, {"id": int, "image_id": int, "category_id": int, "bbox": list})
    if reason:
        return None, reason, False
    if len(entry["bbox"]) != 4 or not all(map(_number, entry["bbox"])):
        return None, f"bbox {entry['bbox']!r} is not 4 finite numbers [x, y, width, height]", False
    image = images.get(entry["image_id"])
    if image is None:
        return None, f"image_id {entry['image_id']} is not among the images", False
    if entry["category_id"] not in category_ids:
        return None, f"unknown category_id {entry['category_id']} (known: {sorted(category_ids)})", False
    seg = entry.get("segmentation")
    if seg is not None and (reason := _segmentation_problem(seg)):
        return None, reason, False
    bbox, reason, clipped = _fit_box(entry["bbox"], image, boxes_outside)
    if bbox is None:
        return None, reason, False
    area = entry.get("area")
    area = float(area) if _number(area) and not clipped else bbox[2] * bbox[3]
    iscrowd = entry.get("iscrowd", 0)
    ann = CocoAnnotation(entry["id"], image.id, entry["category_id"], bbox, area, int(iscrowd == 1), seg or None)
    return ann, None, clipped


def read_coco(
    path: str | Path,
    image_dir: str | Path | None = None,
    *,
    on_error: OnError = "fail",
    boxes_outside: Literal["clip", "report"] = "clip",
    check_images: Literal["none", "header", "decode"] = "header",
) -> CocoDataset:
    """Read and validate a COCO instances file.

    ``boxes_outside="clip"`` clips boxes that extend past the image edge (counted in ``clipped``) while ``"report"``
    treats them as problems. ``check_images`` checks that each image file exists and that its header size matches
    the JSON (``"header"``), also decodes it fully (``"decode"``: finds truncated files), or skips the check.
    """
    if boxes_outside not in ("clip", "report") or check_images not in ("none", "header", "decode"):
        raise ValueError(f"boxes_outside must be clip/report and check_images none/header/decode, got "
                         f"{boxes_outside!r}, {check_images!r}")  # fmt: skip
    path = Path(path)
    data = _load_json(path)
    if image_dir is None:
        image_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    image_dir = Path(image_dir)
    problems = _Problems(on_error)
    categories = _read_categories(path, data["categories"])
    images, dropped = _read_images(path, data["images"], image_dir, check_images, problems)
    category_ids = {c.id for c in categories}
    seen: set[int] = set()
    clipped = 0
    for entry in data["annotations"]:
        if isinstance(entry, dict) and isinstance(entry.get("image_id"), int) and entry["image_id"] in dropped:
            continue  # its image was already reported; one report per cause
        ann, reason, was_clipped = _read_annotation(entry, images, category_ids, boxes_outside)
        if ann is not None and ann.id in seen:
            raise DataError(f"{path}: annotation id {ann.id} appears twice")
        if ann is None:
            ann_id = entry.get("id", "?") if isinstance(entry, dict) else "?"
            image_id = entry.get("image_id") if isinstance(entry, dict) else None
            image = images.get(image_id) if isinstance(image_id, int) else None
            where = f"{path}: annotation {ann_id}" + (f" on image {image.file_name}" if image else "")
            problems.add(where, reason or "invalid")
            continue
        seen.add(ann.id)
        clipped += was_clipped
        images[ann.image_id].annotations.append(ann)
    problems.log(path)
    if clipped:
        log.info("%s: clipped %d box(es) extending outside their image", path, clipped)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return CocoDataset(list(images.values()), categories, image_dir, info, problems.items, clipped)


def write_coco(dataset: CocoDataset, path: str | Path) -> Path:
    """Write ``dataset`` as a COCO instances JSON file (atomically); the images are the caller's to place."""
    path = Path(path)
    atomic_write_json(path, dataset.to_dict())
    return path


def _mask_api():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise MissingDependencyError("pycocotools is not installed: pip install pycocotools") from None
    return mask_utils


def annotation_mask(ann: CocoAnnotation, height: int, width: int) -> np.ndarray:
    """The annotation's segmentation (polygons or RLE) as a uint8 (height, width) 0/1 mask, via pycocotools."""
    if ann.segmentation is None:
        raise DataError(f"annotation {ann.id} on image {ann.image_id} has no segmentation")
    mask_utils = _mask_api()
    seg = ann.segmentation
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)  # uncompressed RLE → compressed
    else:
        rle = dict(seg, counts=seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"])
    with warnings.catch_warnings():
        # pycocotools' compiled decoder trips NumPy 2's copy-keyword deprecation; the result is unaffected
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(np.uint8)


def rle_from_mask(mask: np.ndarray) -> dict[str, Any]:
    """A binary (H, W) mask as JSON-ready compressed RLE ({"size": [h, w], "counts": str}), exact on decoding."""
    rle = _mask_api().encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def semantic_mask(dataset: CocoDataset, image: CocoImage) -> np.ndarray:
    """A class-index mask (0 = background, label + 1 for each category) painted from the image's polygons.

    Larger objects are painted first so that smaller ones on top of them stay visible; annotations without a
    segmentation are left out.
    """
    mask = np.zeros((image.height, image.width), dtype=np.int64)
    for ann in sorted(image.annotations, key=lambda a: -a.area):
        if ann.segmentation is not None:
            mask[annotation_mask(ann, image.height, image.width) > 0] = dataset.label_of(ann.category_id) + 1
    return mask


class CocoDetection(torch.utils.data.Dataset):
    """Images with xyxy boxes and contiguous labels (``dataset.label_of``) as ``Sample``s, optionally transformed.

    Crowd annotations are left out of the targets (COCOeval ignores them too); ``meta`` carries ``image_id`` and
    the original ``(height, width)`` so predictions can be written back in COCO coordinates.
    """

    def __init__(self, dataset: CocoDataset, transform: Transform | None = None, mode: Literal["RGB", "L"] = "RGB"):
        self.dataset, self.transform, self.mode = dataset, transform, mode

    def __len__(self) -> int:
        return len(self.dataset.images)

    def __getitem__(self, index: int) -> Sample:
        image = self.dataset.images[index]
        anns = [a for a in image.annotations if not a.iscrowd]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a.bbox for a in anns)], dtype=torch.float32)
        labels = torch.tensor([self.dataset.label_of(a.category_id) for a in anns], dtype=torch.long)
        sample = Sample(
            image=to_tensor(load_image(self.dataset.image_path(image), self.mode)),
            boxes=boxes.reshape(-1, 4),
            labels=labels,
            meta={"image_id": image.id, "orig_size": (image.height, image.width)},
        )
        return self.transform.apply(sample) if self.transform is not None else sample


def detections_to_results(
    image_id: int, boxes_xyxy: torch.Tensor | np.ndarray, scores: Sequence[float], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """One image's detections as COCO result entries ({image_id, category_id, bbox [x, y, w, h], score})."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(cat),
            "bbox": [round(float(b[0]), 3), round(float(b[1]), 3), round(float(b[2] - b[0]), 3),
                     round(float(b[3] - b[1]), 3)],
            "score": round(float(score), 5),
        }
        for b, score, cat in zip(boxes, scores, category_ids, strict=True)
    ]


def write_coco_results(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Write detections in the COCO results format (a JSON list), the file COCOeval and the COCO server read."""
    path = Path(path)
    atomic_write_json(path, results)
    return path


COCO_STAT_NAMES = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large",
                   "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")  # fmt: skip


def evaluate_coco(dataset: CocoDataset, results: list[dict[str, Any]] | str | Path) -> dict[str, float]:
    """COCOeval bbox metrics of ``results`` (a list or a results JSON file) against ``dataset``'s ground truth.

    ``mAP`` is mAP@[.5:.95] and ``mAP50`` is mAP@.5; a metric COCOeval cannot compute (e.g. no small objects) is
    -1, as in COCOeval itself. pycocotools' printing is captured and logged at debug level.
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingDependencyError("pycocotools is not installed: pip install pycocotools") from None
    if not isinstance(results, list):
        path = Path(results)
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: cannot read COCO results ({exc})") from None
        if not isinstance(results, list):
            raise DataError(f"{path}: COCO results must be a JSON list of detections")
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    known = {image.id for image in dataset.images}
    if unknown := {r.get("image_id") for r in results} - known:
        raise DataError(f"COCO results mention image ids not in the ground truth: {sorted(unknown, key=str)[:10]}")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        gt = COCO()
        gt.dataset = dataset.to_dict()
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    log.debug("COCOeval output:\n%s", printed.getvalue())
    return {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats, strict=True)}
