"""Image–caption files: a table of ``image,caption`` rows beside a folder of images, or the COCO captions layout.

Two layouts, both read into ``data.captions.CaptionedImages`` (images stay on disk as paths, decoded when used):

- a CSV, TSV or JSON Lines table with an ``image`` column (a path relative to the table's folder, or to
  ``images_dir``) and a ``caption`` column; an image may have any number of rows, one caption each;
- COCO captions (``captions_*.json``): ``images`` [{id, file_name}] and ``annotations`` [{image_id, caption}];
  file names are relative to ``images_dir``, else to the json's folder or its ``images/`` subfolder.

A folder names one of those files (``captions.csv``/``.tsv``/``.jsonl``, or one ``captions*.json``), or holds
``train/``, ``val/``, ``test/`` subfolders that each do (``read_caption_splits``). Every problem is found while
reading, as a one-line ``DataError`` naming the file and line or image: a missing column, malformed JSON, an
unknown image id. A missing or unreadable image file, or an empty caption, is a counted warning by default
(``on_error="skip"``) or fails the read (``on_error="fail"``). Under torchrun each rank reads only its share of the
image headers and every rank goes on with the gathered outcomes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from modelforge.core.errors import DataError
from modelforge.data.captions import CaptionedImages
from modelforge.data.formats.text_table import read_table_rows
from modelforge.data.lazy_images import problems_over_ranks
from modelforge.data.transforms import image_size

log = logging.getLogger("modelforge.data")
OnError = Literal["skip", "fail"]
TABLE_NAMES = ("captions.csv", "captions.tsv", "captions.jsonl")
SPLIT_NAMES = ("train", "val", "test")


class _Skips:
    """Counts (where, reason) problems, or raises on the first one with ``on_error="fail"``."""

    def __init__(self, source: Path, on_error: OnError):
        if on_error not in ("skip", "fail"):
            raise DataError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.source, self.on_error, self.items = source, on_error, []

    def add(self, where: str, reason: str) -> None:
        if self.on_error == "fail":
            raise DataError(f"{where}: {reason}")
        self.items.append((where, reason))

    def log(self) -> None:
        for where, reason in self.items[:20]:
            log.warning("skipped %s: %s", where, reason)
        if self.items:
            log.warning("%d entr(y/ies) of %s skipped (on_error=fail stops instead)", len(self.items), self.source)


def _image_problem(file: Path) -> str | None:
    """None when ``file`` exists and its header reads as an image; else why not (decoding comes later, per batch)."""
    if not file.is_file():
        return "image file is missing"
    try:
        image_size(file)
    except DataError as exc:
        return str(exc).removeprefix(f"{file}: ")
    return None


def _image_problems(files: list[Path], on_error: OnError) -> list[str | None]:
    """``_image_problem`` of each file, in order. Under torchrun each rank reads only its contiguous share of the
    headers and the outcomes are gathered (``rows_over_ranks``), so every rank keeps and skips what one process does;
    with ``on_error="fail"`` a rank stops at the first bad file of its share (only the first counts)."""
    return problems_over_ranks(range(len(files)), lambda index: _image_problem(files[index]), on_error)


def _gather(source: Path, rows: list[tuple[str, str, str]], resolve, skips: _Skips, origin: str) -> CaptionedImages:
    """Rows of (where, image reference, caption) → one entry per image, captions in file order."""
    refs = list(dict.fromkeys(ref for _, ref, caption in rows if caption.split()))  # images with a caption to keep
    files = {ref: resolve(ref) for ref in refs}
    problems = dict(zip(refs, _image_problems(list(files.values()), skips.on_error), strict=True))
    by_image: dict[str, list[str]] = {}
    bad: set[str] = set()
    for where, ref, caption in rows:
        caption = " ".join(caption.split())
        if not caption:
            skips.add(where, "empty caption")
            continue
        if ref in bad:
            continue
        if problems[ref]:
            skips.add(str(files[ref]), f"{problems[ref]} ({where})")
            bad.add(ref)
            continue
        by_image.setdefault(ref, []).append(caption)
    skips.log()
    if not by_image:
        raise DataError(f"{source}: no usable image–caption pairs (every row has a missing image or empty caption)")
    return CaptionedImages([files[ref] for ref in by_image], list(by_image.values()), origin, list(by_image))


def read_caption_table(path: str | Path, images_dir: str | Path | None = None, image_column: str = "image",
                       caption_column: str = "caption", on_error: OnError = "skip") -> CaptionedImages:
    """A CSV/TSV/JSONL of (image, caption) rows; image paths are relative to ``images_dir`` or the table's folder."""
    path = Path(path)
    base = Path(images_dir) if images_dir is not None else path.parent
    rows = [(f"{path}: line {row.line}", row.values[image_column].strip(), row.values[caption_column])
            for row in read_table_rows(path, [image_column, caption_column])]
    return _gather(path, rows, lambda ref: base / ref, _Skips(path, on_error), path.name)


def _coco_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: COCO captions file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a COCO captions file is a JSON object, found {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing the {key!r} list of a COCO captions file")
    return data


def _coco_file_names(path: Path, entries: list[Any]) -> dict[int, str]:
    names: dict[int, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) \
                or not isinstance(entry.get("file_name"), str):
            raise DataError(f"{path}: image entry {json.dumps(entry)[:120]} needs an integer 'id' and a 'file_name'")
        if entry["id"] in names:
            raise DataError(f"{path}: image id {entry['id']} appears twice")
        names[entry["id"]] = entry["file_name"]
    return names


def read_coco_captions(path: str | Path, images_dir: str | Path | None = None,
                       on_error: OnError = "skip") -> CaptionedImages:
    """COCO captions json: ``images`` [{id, file_name}], ``annotations`` [{image_id, caption}]."""
    path = Path(path)
    data = _coco_json(path)
    names = _coco_file_names(path, data["images"])
    if images_dir is not None:
        base = Path(images_dir)
    else:  # the json's folder, or its images/ subfolder when the first image is found only there
        first = next(iter(names.values()), "")
        base = path.parent / "images" if not (path.parent / first).exists() and (path.parent / "images").is_dir() \
            else path.parent
    rows = []
    for number, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {number}"
        if not (isinstance(ann, dict) and isinstance(ann.get("image_id"), int) and isinstance(ann.get("caption"), str)):
            raise DataError(f"{where} ({json.dumps(ann)[:120]}) needs an integer 'image_id' and a string 'caption'")
        if ann["image_id"] not in names:
            raise DataError(f"{where}: image_id {ann['image_id']} is not in the file's images list")
        rows.append((where, names[ann["image_id"]], ann["caption"]))
    return _gather(path, rows, lambda ref: base / ref, _Skips(path, on_error), path.name)


def caption_file(folder: Path) -> Path | None:
    """The one captions file of ``folder``: captions.csv/.tsv/.jsonl or a single captions*.json; None if none."""
    found = [folder / name for name in TABLE_NAMES if (folder / name).is_file()]
    found += sorted(folder.glob("captions*.json"))
    if len(found) > 1:
        raise DataError(f"{folder}: several captions files ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def read_captions(path: str | Path, images_dir: str | Path | None = None, on_error: OnError = "skip",
                  image_column: str = "image", caption_column: str = "caption") -> CaptionedImages:
    """A captions table, a COCO captions json, or a folder holding one of them."""
    path = Path(path)
    if path.is_dir():
        file = caption_file(path)
        if file is None:
            raise DataError(f"{path}: no captions file; expected {', '.join(TABLE_NAMES)} or captions_*.json there")
        path = file
    elif not path.is_file():
        raise DataError(f"{path}: captions file or folder not found")
    if path.suffix.lower() == ".json":
        return read_coco_captions(path, images_dir, on_error)
    return read_caption_table(path, images_dir, image_column, caption_column, on_error)


def read_caption_splits(path: str | Path, images_dir: str | Path | None = None, on_error: OnError = "skip",
                        image_column: str = "image", caption_column: str = "caption") -> dict[str, CaptionedImages]:
    """``{"train"/"val"/"test": set}`` for the split subfolders of ``path`` that exist, or ``{"all": set}`` when
    ``path`` is one file or a folder without them; each split's ``origin`` names its folder or file."""
    path = Path(path)
    options = {"images_dir": images_dir, "on_error": on_error, "image_column": image_column,
               "caption_column": caption_column}
    splits = {name: path / name for name in SPLIT_NAMES if path.is_dir() and (path / name).is_dir()}
    if not splits:
        return {"all": read_captions(path, **options)}
    if "train" not in splits:
        raise DataError(f"{path}: has {', '.join(f'{s}/' for s in splits)} but no train/ folder")
    out = {}
    for name, folder in splits.items():
        out[name] = read_captions(folder, **options)
        out[name].origin = f"{path.name}/{name}"
    return out
