"""``medical-phantoms``: generated grayscale scan-like images with lesion-like blobs and their binary masks.

These are generated phantoms, not patient data. Each image shows an elliptical body with a bright rim, textured
tissue and a few inner organ-like ellipses; 1–3 lesions (irregular blobs, brighter or darker than the tissue around
them, at varying contrast) are added, then noise of varying strength. The mask marks lesion pixels (1) against
everything else (0).

On disk (under ``cache_dir("medical-phantoms")/<params-key>/``), each split is a segmentation folder whose images
are DICOM files: ``train/case_00000.dcm`` (12-bit MONOCHROME2, Secondary Capture, minimal tags, written and read
with pydicom) next to ``train/case_00000_mask.png`` (palette PNG, 0 = background, 1 = lesion), plus classes.txt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from modelforge.core.atomic import atomic_directory, atomic_write_text
from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.cache import cache_dir
from modelforge.data.formats.segmentation_folder import (
    MASK_SUFFIX,
    SegmentationFolder,
    read_segmentation_folder,
    write_mask,
)

log = logging.getLogger("modelforge.data")
CLASS_NAMES = ("background", "lesion")
SPLITS = ("train", "val", "test")
BITS_STORED = 12
MAX_VALUE = 2**BITS_STORED - 1
_VERSION = 1


@dataclass(frozen=True)
class PhantomParams:
    num_train: int = 800
    num_val: int = 100
    num_test: int = 100
    image_size: int = 128
    min_lesions: int = 1
    max_lesions: int = 3
    min_contrast: float = 0.12  # lesion intensity offset, on a 0..1 scale
    max_contrast: float = 0.35
    max_noise: float = 0.05  # noise standard deviation, drawn from [0.01, max_noise]
    seed: int = 0

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": _VERSION}, sort_keys=True)
        return f"{self.image_size}px-s{self.seed}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Low-frequency noise with unit standard deviation (tissue texture, lesion outlines)."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def _ellipse(size: int, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """Normalised elliptical distance: < 1 inside the ellipse."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * cos + (yy - cy) * sin) / rx
    v = (-(xx - cx) * sin + (yy - cy) * cos) / ry
    return np.sqrt(u**2 + v**2)


def _lesion(rng: np.random.Generator, size: int, taken: np.ndarray) -> np.ndarray | None:
    """An irregular blob inside the body that keeps a gap to the lesions already placed (overlapping bright and dark
    lesions would cancel out into an invisible but labelled patch); None if no spot is found."""
    from scipy.ndimage import binary_dilation

    c = size / 2
    keep_out = binary_dilation(taken, iterations=3) if taken.any() else taken
    for _attempt in range(20):
        radius = size * rng.uniform(0.04, 0.1)
        # the centre stays well inside the body (< 0.6 of its radius), so a lesion never leaves it
        t, r = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.6)
        cx, cy = c + r * np.cos(t) * size * 0.3, c + r * np.sin(t) * size * 0.25
        rx, ry = radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.7, 1.3)
        shape = _ellipse(size, cx, cy, rx, ry, rng.uniform(0, np.pi))
        lesion = (shape + 0.18 * _smooth_noise(rng, size, radius / 2)) < 1  # irregular outline
        if lesion.any() and not (lesion & keep_out).any():
            return lesion
    return None


def render_phantom(rng: np.random.Generator, params: PhantomParams) -> tuple[np.ndarray, np.ndarray]:
    """One (image float in [0, 1], mask uint8 0/1) pair of shape (S, S)."""
    from scipy.ndimage import gaussian_filter

    size = params.image_size
    c = size / 2
    body = _ellipse(size, c + rng.uniform(-3, 3), c + rng.uniform(-3, 3), size * rng.uniform(0.36, 0.46),
                    size * rng.uniform(0.3, 0.4), rng.uniform(-0.3, 0.3))  # fmt: skip
    image = np.where(body < 1, 0.45 + 0.04 * _smooth_noise(rng, size, size / 24), 0.02)
    image[(body >= 0.93) & (body < 1)] = 0.85  # a bright rim, like skin and bone
    for _ in range(rng.integers(2, 4)):
        cx, cy = c + rng.uniform(-0.2, 0.2) * size, c + rng.uniform(-0.15, 0.15) * size
        rx, ry = size * rng.uniform(0.06, 0.14), size * rng.uniform(0.05, 0.12)
        organ = _ellipse(size, cx, cy, rx, ry, rng.uniform(0, np.pi))
        image = np.where(organ < 1, rng.uniform(0.3, 0.65), image)
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(rng.integers(params.min_lesions, params.max_lesions + 1)):
        lesion = _lesion(rng, size, mask)
        if lesion is None:
            continue
        sign = 1 if rng.uniform() < 0.6 else -1
        image = image + sign * rng.uniform(params.min_contrast, params.max_contrast) * lesion
        mask |= lesion
    image = gaussian_filter(image, 0.7)  # scanner blur
    image = image + rng.normal(0, rng.uniform(0.01, params.max_noise), image.shape)
    return np.clip(image, 0, 1).astype(np.float32), mask.astype(np.uint8)


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise MissingDependencyError("pydicom is not installed: pip install pydicom") from None
    return pydicom


def write_dicom(path: str | Path, pixels: np.ndarray, *, uid_seed: str, instance_number: int = 1) -> Path:
    """Save a 2-D uint16 image (values < 4096) as a minimal Secondary Capture DICOM file.

    UIDs derive from ``uid_seed`` so that regenerating the dataset gives byte-identical files.
    """
    _pydicom()  # a clear error when it is missing
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint16 or pixels.max(initial=0) > MAX_VALUE:
        raise ValueError(f"write_dicom needs a 2-D uint16 array with values <= {MAX_VALUE}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "instance"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.Modality = "OT"
    # type-2 attributes of the Patient/Study/Series modules: required to be present, allowed to be empty
    for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                    "PatientBirthDate", "PatientSex", "SeriesNumber"):  # fmt: skip
        setattr(ds, keyword, "")
    ds.ConversionType = "SYN"  # synthetic image
    ds.PatientName = "Phantom^Generated"
    ds.PatientID = "PHANTOM"
    ds.SeriesDescription = "modelforge generated phantom (not patient data)"
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def read_dicom(path: str | Path) -> np.ndarray:
    """The pixel array of a single-frame DICOM file; with RescaleSlope/Intercept present, rescaled float32 values.

    DataError naming the file when it is not DICOM, has no pixel data or uses an encoding that cannot be decoded.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such DICOM file")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data")
    try:
        pixels = ds.pixel_array
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise DataError(f"{path}: cannot decode the DICOM pixel data ({exc})") from None
    if pixels.ndim != 2:
        raise DataError(f"{path}: expected a single grayscale frame, found pixel array of shape {pixels.shape}")
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        return pixels.astype(np.float32) * slope + intercept
    return pixels


def medical_phantoms(params: PhantomParams | None = None, **overrides) -> Path:
    """Generate (or find in the cache) the dataset; returns the folder holding ``train/``, ``val/``, ``test/``."""
    params = replace(params or PhantomParams(), **overrides)
    if not 1 <= params.min_lesions <= params.max_lesions:
        raise ValueError(f"need 1 <= min_lesions <= max_lesions, got {params.min_lesions}, {params.max_lesions}")
    root = cache_dir("medical-phantoms") / params.key()
    if (root / "test" / "classes.txt").is_file():
        return root
    log.info("generating medical-phantoms into %s", root)
    counts = {"train": params.num_train, "val": params.num_val, "test": params.num_test}
    with atomic_directory(root) as tmp:
        for code, split in enumerate(SPLITS):
            folder = tmp / split
            folder.mkdir()
            for index in range(counts[split]):
                rng = np.random.default_rng([params.seed, code, index])
                image, mask = render_phantom(rng, params)
                name = f"case_{index:05d}"
                stored = np.rint(image * MAX_VALUE).astype(np.uint16)
                write_dicom(folder / f"{name}.dcm", stored, uid_seed=f"{params.key()}/{split}/{index}",
                            instance_number=index + 1)  # fmt: skip
                write_mask(folder / f"{name}{MASK_SUFFIX}", mask)
            atomic_write_text(folder / "classes.txt", "\n".join(CLASS_NAMES) + "\n")
    return root


def phantom_folder(split: Literal["train", "val", "test"], params: PhantomParams | None = None, **overrides):
    """The split as a checked ``SegmentationFolder`` whose images are read with ``read_dicom``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = medical_phantoms(params, **overrides) / split
    return read_segmentation_folder(root, image_suffixes=(".dcm",), image_reader=read_dicom, on_error="fail")


def load_phantoms(
    split: Literal["train", "val", "test"], params: PhantomParams | None = None, **overrides
) -> dict[str, np.ndarray]:
    """``images`` float32 (N, S, S) in [0, 1] read back from the DICOM files, ``masks`` uint8 (N, S, S) 0/1."""
    folder: SegmentationFolder = phantom_folder(split, params, **overrides)
    images, masks = folder.arrays()
    return {
        "images": np.stack([image.astype(np.float32) / MAX_VALUE for image in images]),
        "masks": np.stack([mask.astype(np.uint8) for mask in masks]),
    }
