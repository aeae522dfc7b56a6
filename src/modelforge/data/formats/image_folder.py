"""Image folders in the ImageNet layout: ``root/<class>/<image>``, or ``root/{train,val,test}/<class>/<image>``.

``index_image_folder`` lists the files without opening one (an ImageNet-size folder indexes in seconds); the
pixels are decoded later, one item at a time (data/lazy_images.py), where an unreadable file is found when first
touched — skipped with a counted warning or failing the run, by configuration.
``read_image_folder`` decodes everything into memory at once (small folders, tests, the in-memory benchmark path).
A synset map beside the folders (``LOC_synset_mapping.txt`` or ``synset_words.txt``: ``n01440764 tench, Tinca
tinca``) turns WordNet-id folder names into human class names.
"""

from __future__ import annotations

import bisect
import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from modelforge.core.errors import DataError

log = logging.getLogger("modelforge.data")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
IMAGE_SUFFIX_TUPLE = tuple(IMAGE_SUFFIXES)  # for str.endswith
IMAGE_SUFFIX_BYTES = tuple(suffix.encode() for suffix in IMAGE_SUFFIXES)
IMAGE_SUFFIX_CASES = IMAGE_SUFFIX_BYTES + tuple(suffix.upper() for suffix in IMAGE_SUFFIX_BYTES)


@dataclass
class ImageSet:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_image(path: Path | bytes, channels: int, size: int) -> np.ndarray:
    """One image file (a Path, or its path in the file system's bytes) → (C, size, size) uint8; DataError naming
    the file when it is not a readable image. The array is writable when the PNG fast path decoded it."""
    data = _read_file(path)
    fast = _decode_png_as_is(data, channels, size) if data is not None else None
    if fast is not None:
        return fast
    where = Path(os.fsdecode(path)) if isinstance(path, bytes) else path
    # Pillow decodes the bytes already read; a file that could not be read is opened again for Pillow's message
    return _decode(where if data is None else io.BytesIO(data), str(where), channels, size)


def _read_file(path: Path | bytes) -> bytes | None:
    """The file's bytes through os-level calls (a third of the cost of Path.read_bytes, which counts on a small
    image); None when it cannot be read — Pillow's path then says why. The buffer is the file's size: a larger
    one, shrunk after the read, leaves holes in the heap that kept pixels then fragment (the in-memory reader's
    peak grew by 2 KB an image with 64 KB reads)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(handle).st_size
        data = os.read(handle, size + 1)  # the + 1 sees a file that grew since the fstat
        if len(data) <= size:
            return data
        chunks = [data]
        while chunk := os.read(handle, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(handle)


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


def _decode_png_as_is(data: bytes, channels: int, size: int) -> np.ndarray | None:
    """A PNG already ``size``×``size`` 8-bit grey (channels 1) or RGB (channels 3), decoded by OpenCV — five times
    faster than Pillow on small images, which is what lets DataLoader workers keep up with a small network's step on
    few cores — or None for every other file, which Pillow then decodes. PNG is lossless and no conversion or resize
    happens here, so the pixels equal Pillow's; everything that would convert (alpha, 16 bits, palette to grey,
    another size) or is not a PNG (JPEG decoders may differ) takes Pillow's path, as does a file OpenCV cannot read,
    so errors keep their messages."""
    cv2 = _opencv()
    if cv2 is None or not _plain_png(data, channels, size):
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


def check_image_head(head: bytes, whole: Path | Callable[[], bytes], where: str) -> None:
    """DataError naming ``where`` when an image's first 32 bytes are not an image's: a known signature passes (a
    few microseconds); anything else is opened by Pillow, header only — ``whole`` is the file, or a function
    returning all its bytes — which accepts it or says what is wrong."""
    if _known_signature(head):
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(whole if isinstance(whole, Path) else io.BytesIO(whole())) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise DataError(f"{where}: refused by Pillow's decompression-bomb guard ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{where}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    if width < 1 or height < 1:
        raise DataError(f"{where}: not a readable image (size {width}x{height})")


def files_under(directory: Path, base: Path) -> tuple[list[bytes], list[bytes]]:
    """(image files, other files) anywhere under ``directory``, as paths relative to ``base`` (``directory`` or
    above it) in the file system's bytes, hidden files and folders left out, in the order of ``sorted(Path.rglob)``
    (names sorted, each folder's files where its name sorts). A name with an image suffix is taken for a file
    without asking the file system: listing a folder of 200,000 images costs one os.listdir per folder, where
    Path.rglob and is_file cost a stat and several Path objects per file."""
    images: list[bytes] = []
    others: list[bytes] = []

    def visit(folder: bytes, relative: bytes) -> None:
        names = sorted(os.listdir(folder))
        first_hidden = bisect.bisect_left(names, b".")  # hidden names sort together
        hidden = first_hidden < len(names) and names[first_hidden].startswith(b".")
        if not hidden and all(name.endswith(IMAGE_SUFFIX_CASES) for name in names):
            images.extend([relative + name for name in names])  # the usual class folder: images only, one pass
            return
        for name in names:
            if name.startswith(b"."):
                continue
            if name.lower().endswith(IMAGE_SUFFIX_BYTES):
                images.append(relative + name)
            elif os.path.isdir(folder + b"/" + name):
                visit(folder + b"/" + name, relative + name + b"/")
            else:
                others.append(relative + name)

    inside = directory.relative_to(base)
    visit(os.fsencode(directory), b"" if inside == Path() else os.fsencode(inside) + b"/")
    return images, others


def _image_files(directory: Path, base: Path, on_error: Literal["skip", "fail"],
                 skipped: list[tuple[str, str]]) -> list[bytes]:
    """The image files under ``directory`` (``files_under``); every other file fails (``on_error="fail"``) or is
    added to ``skipped`` with its message."""
    images, others = files_under(directory, base)
    for other in others:
        path = base / os.fsdecode(other)
        problem = f"{path}: not an image file (suffix {path.suffix or 'none'})"
        if on_error == "fail":
            raise DataError(problem)
        skipped.append((str(path), problem))
    return images


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
        for path in (root / os.fsdecode(name) for name in _image_files(directory, root, on_error, skipped)):
            try:
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
    """List ``root/<class>/**`` without opening a file: start-up stays flat however many images the folder holds.
    A file without an image suffix is skipped (counted) or fails here, with ``read_image_folder``'s message; a
    file that is not a readable image is found when first decoded (data/lazy_images.py: skipped, or failing the
    run, by the same ``on_error``). Paths are kept relative to ``base`` (``root`` or above it)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    dirs = class_dirs(root)
    classes = classes or [d.name for d in dirs]
    index = {name: i for i, name in enumerate(classes)}
    paths: list[bytes] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for directory in dirs:
        if directory.name not in index:
            raise DataError(f"{directory}: class {directory.name!r} is not among the training classes {classes}")
        images = _image_files(directory, base, on_error, skipped)
        paths += images
        labels += [index[directory.name]] * len(images)
    report_skipped(skipped, f"file(s) under {root}")
    if not paths:
        raise DataError(f"{root}: no image files found")
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
