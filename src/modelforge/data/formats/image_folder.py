"""Image folders in the ImageNet layout: ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>``.

``index_image_folder`` lists the files and opens each one's header only (Pillow reads the format and size without
decoding pixels), so a bad file is found before training starts — skipped with a counted warning or failing the
run, by configuration — while the pixels are decoded later, one item at a time (data/lazy_images.py).
``read_image_folder`` decodes everything into memory at once (small folders, tests, the in-memory benchmark path).
A synset map beside the folders (``LOC_synset_mapping.txt`` or ``synset_words.txt``: ``n01440764 tench, Tinca
tinca``) turns WordNet-id folder names into human class names.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from modelforge.core.errors import DataError

log = logging.getLogger("modelforge.data")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_image(path: Path, channels: int, size: int) -> np.ndarray:
    """One image file → (C, size, size) uint8; DataError naming the file when it is not a readable image."""
    fast = _decode_png_as_is(path, channels, size)
    return fast if fast is not None else _decode(path, str(path), channels, size)


def decode_image_bytes(raw: bytes, where: str, channels: int, size: int) -> np.ndarray:
    """An encoded image held in memory (a shard member, a dataset row) → the pixels ``decode_image`` gives for the
    same file; DataError naming ``where`` when it is not a readable image."""
    fast = _decode_png_as_is(raw, channels, size)
    return fast if fast is not None else _decode(io.BytesIO(raw), where, channels, size)


def _decode(source: Path | BinaryIO, where: str, channels: int, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            mode = "L" if channels == 1 else "RGB"
            if img.mode != mode:  # skipping the no-op copies saves a fifth of a small PNG's decode time
                img = img.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:  # not an OSError: Pillow's guard against huge pixel counts
        raise DataError(f"{where}: refused by Pillow's decompression-bomb guard ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _decode_png_as_is(source: Path | bytes, channels: int, size: int) -> np.ndarray | None:
    """A PNG already ``size``×``size`` 8-bit grey (channels 1) or RGB (channels 3), decoded by OpenCV — five times
    faster than Pillow on small images, which is what lets DataLoader workers keep up with a small network's step on
    few cores — or None for every other file, which Pillow then decodes. PNG is lossless and no conversion or resize
    happens here, so the pixels equal Pillow's; everything that would convert (alpha, 16 bits, palette to grey,
    another size) or is not a PNG (JPEG decoders may differ) takes Pillow's path, as does a file OpenCV cannot read,
    so errors keep their messages."""
    cv2 = _opencv()
    if cv2 is None:
        return None
    try:
        data = source.read_bytes() if isinstance(source, Path) else source
    except OSError:
        return None
    if not _plain_png(data, channels, size):
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != (size, size):
        return None
    if channels == 1 and pixels.ndim == 2:
        return pixels[None]
    if channels == 3 and pixels.ndim == 3 and pixels.shape[2] == 3:
        return np.ascontiguousarray(pixels[:, :, ::-1].transpose(2, 0, 1))  # OpenCV's BGR → RGB, channels first
    return None


def _plain_png(data: bytes, channels: int, size: int) -> bool:
    """The PNG's header says ``size``×``size`` grey (channels 1) or 8-bit RGB / palette (channels 3), and the file
    ends with its IEND chunk. Checked before OpenCV sees the bytes, so it never allocates a decompression bomb's
    pixels nor reports a truncated file on stderr: those go to Pillow, which refuses them with one line."""
    if len(data) < 45 or not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR" or data[-8:-4] != b"IEND":
        return False
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    wanted = colour == 0 and depth <= 8 if channels == 1 else (colour == 2 and depth == 8) or colour == 3
    return width == height == size and wanted


@lru_cache(maxsize=1)
def _opencv() -> Any:
    """OpenCV when installed (the ``media`` extra), else None: decoding then uses Pillow alone."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def decode_center_crop(image: Any, size: int, resize: int) -> np.ndarray:
    """A Pillow image → (3, size, size) uint8 the ImageNet evaluation way: shorter side to ``resize``, centre crop."""
    from modelforge.data.transforms import CenterCrop, Compose, Resize, to_uint8_array

    pixels = to_uint8_array(Compose([Resize(resize), CenterCrop(size)])(image))
    return pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None]


def _known_signature(head: bytes) -> bool:
    """The file starts like a PNG (with its IHDR chunk and a non-zero size), JPEG, GIF, BMP, WebP or TIFF."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        return head[12:16] == b"IHDR" and width > 0 and height > 0
    return (head.startswith((b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"))
            or (head.startswith(b"RIFF") and head[8:12] == b"WEBP"))


def check_image_header(path: Path) -> None:
    """DataError naming the file when it is not an image: a known signature in its first bytes passes (tens of
    microseconds a file); anything else is opened by Pillow, header only, which accepts it or says what is wrong."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: not an image file (suffix {path.suffix or 'none'})")
    try:
        with open(path, "rb") as file:
            head = file.read(32)
    except OSError as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    check_image_head(head, path, str(path))


def check_image_head(head: bytes, whole: Path | Callable[[], bytes], where: str) -> None:
    """The header check of ``check_image_header`` on an image's first 32 bytes; ``whole`` (the file, or a function
    returning all its bytes) is opened by Pillow, header only, when the signature is not a known one."""
    from PIL import Image, UnidentifiedImageError

    if _known_signature(head):
        return
    try:
        with Image.open(whole if isinstance(whole, Path) else io.BytesIO(whole())) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise DataError(f"{where}: refused by Pillow's decompression-bomb guard ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    if width < 1 or height < 1:
        raise DataError(f"{where}: not a readable image (size {width}x{height})")


def class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/<image files>")
    return dirs


def read_image_folder(
    root: Path,
    channels: int,
    size: int,
    classes: list[str] | None = None,
    on_error: Literal["skip", "fail"] = "skip",
) -> ImageSet:
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    dirs = class_dirs(root)
    classes = classes or [d.name for d in dirs]
    index = {name: i for i, name in enumerate(classes)}
    images, labels, skipped = [], [], []
    for directory in dirs:
        if directory.name not in index:
            raise DataError(f"{directory}: class {directory.name!r} is not among the training classes {classes}")
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DataError(f"{path}: not an image file (suffix {path.suffix or 'none'})")
                images.append(decode_image(path, channels, size))
                labels.append(index[directory.name])
            except DataError as exc:
                if on_error == "fail":
                    raise
                skipped.append((str(path), str(exc)))
    report_skipped(skipped, f"file(s) under {root}")
    if not images:
        raise DataError(f"{root}: no readable images found")
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int64), classes, skipped)


@dataclass
class ImageIndex:
    """The files of one image folder: paths relative to ``base`` (bytes, in one numpy array, so that forked
    DataLoader workers share it without copying) and label indices into ``classes`` (folder names)."""

    paths: np.ndarray  # (N,) bytes, relative to the base folder
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def report_skipped(skipped: list[tuple[str, str]], where: str) -> None:
    """One warning per skipped item (its reason names it), then the count: ``N file(s) under ROOT skipped``."""
    for _path, reason in skipped:
        log.warning("skipped %s", reason)
    if skipped:
        log.warning("%d %s skipped (set data.on_error=fail to stop instead)", len(skipped), where)


def index_image_folder(
    root: Path,
    base: Path,
    classes: list[str] | None = None,
    on_error: Literal["skip", "fail"] = "skip",
) -> ImageIndex:
    """List ``root/<class>/**`` with a header check per file; the same skip/fail rules and messages as
    ``read_image_folder``, without decoding a pixel. Paths are kept relative to ``base`` (``root`` or above it)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    dirs = class_dirs(root)
    classes = classes or [d.name for d in dirs]
    index = {name: i for i, name in enumerate(classes)}
    paths, labels, skipped = [], [], []
    for directory in dirs:
        if directory.name not in index:
            raise DataError(f"{directory}: class {directory.name!r} is not among the training classes {classes}")
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                check_image_header(path)
            except DataError as exc:
                if on_error == "fail":
                    raise
                skipped.append((str(path), str(exc)))
                continue
            paths.append(str(path.relative_to(base)).encode("utf-8", "surrogateescape"))
            labels.append(index[directory.name])
    report_skipped(skipped, f"file(s) under {root}")
    if not paths:
        raise DataError(f"{root}: no readable images found")
    return ImageIndex(np.asarray(paths, dtype=np.bytes_), np.asarray(labels, dtype=np.int64), classes, skipped)


SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")


def imagenet_class_order(folder: Path, outputs: int) -> list[str]:
    """The WordNet ids of a pretrained ImageNet classifier's ``outputs`` units, in unit order: the lines of the synset
    map beside ``folder`` (or above it), or, without one, the folder's own class folders sorted when it holds all of
    them (ImageNet's unit order is the sorted ids)."""
    found = next((d / name for d in (folder, folder.parent) for name in SYNSET_FILES if (d / name).is_file()), None)
    if found is not None:
        ids = [line.split()[0] for line in found.read_text(encoding="utf-8", errors="replace").splitlines()
               if line.strip()]
        if len(ids) != outputs:
            raise DataError(f"{found}: {len(ids)} synsets, but the network has {outputs} outputs")
        return ids
    ids = sorted(d.name for d in class_dirs(folder))
    if len(ids) != outputs:
        raise DataError(f"{folder}: {len(ids)} class folders and no {SYNSET_FILES[0]} beside it; with fewer than all "
                        f"{outputs} classes the synset map is needed to know which output each folder is")
    return ids


def read_synset_names(folder: Path, classes: list[str]) -> list[str] | None:
    """Human names for WordNet-id class folders from a synset map in ``folder`` (or its parent), in ``classes``
    order; None when there is no map. The first name of each line is used (``n01440764 tench, Tinca tinca`` →
    ``tench``); a name that two synsets share (ImageNet has two "crane"s) gets its id appended to stay unique."""
    found = next((d / name for d in (folder, folder.parent) for name in SYNSET_FILES if (d / name).is_file()), None)
    if found is None:
        return None
    names: dict[str, str] = {}
    for number, line in enumerate(found.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, text = line.strip().partition(" ")
        if not text.strip():
            raise DataError(f"{found}:{number}: expected '<wnid> <name>[, <other names>]', got {line.strip()!r}")
        names[wnid] = text.split(",")[0].strip()
    missing = [c for c in classes if c not in names]
    if missing:
        raise DataError(f"{found}: no name for class folder(s) {', '.join(missing[:5])}"
                        f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
    chosen = [names[c] for c in classes]
    shared = {n for n in chosen if chosen.count(n) > 1}
    return [f"{n} ({c})" if n in shared else n for n, c in zip(chosen, classes)]
