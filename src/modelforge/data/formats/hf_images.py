"""The image and label columns of a local Hugging Face dataset, read without decoding a pixel.

The image column is the one of ``datasets.Image`` type (else the one binary column); it is cast to
``Image(decode=False)``, so a row gives the stored ``{bytes, path}`` and no Pillow image is made on access. The
label column is a ``ClassLabel`` (its names are the labels), else one named ``label``/``labels``/``cls`` (ints or
strings). Each image's first 32 bytes pass the header check of an image folder's files (Arrow slices them from the
memory map; the rest of the image is not read), so bad images are found before training, as in a folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from modelforge.core.errors import DataError
from modelforge.data.formats.image_folder import check_image_head

LABEL_NAMES = ("label", "labels", "cls")
BATCH = 1000  # rows read from the memory map at a time while indexing


def image_column_of(dataset: Any, given: str | None, where: str) -> str:
    """``given``, else the one column of ``datasets.Image`` type, else the one binary column."""
    import datasets

    columns = dataset.column_names
    if given:
        if given not in columns:
            raise DataError(f"{where}: no column {given!r} (data.image_column); its columns: {', '.join(columns)}")
        if not _holds_images(dataset.features[given]):
            raise DataError(f"{where}: column {given!r} (data.image_column) is {dataset.features[given]}, not images "
                            "(a datasets.Image or binary column)")
        return given
    found = [c for c in columns if isinstance(dataset.features[c], datasets.Image)]
    found = found or [c for c in columns if _holds_images(dataset.features[c])]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(f"{where}: several image columns ({', '.join(found)}); set data.image_column")
    raise DataError(f"{where}: no image column (datasets.Image or binary) among {', '.join(columns)}; set "
                    "data.image_column")


def _holds_images(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.Image) or getattr(feature, "dtype", None) in ("binary", "large_binary")


def label_column_of(dataset: Any, given: str | None, image_column: str, where: str) -> str:
    """``given``, else the one ``ClassLabel`` column, else the one named label/labels/cls."""
    columns = dataset.column_names
    if given:
        if given not in columns:
            raise DataError(f"{where}: no column {given!r} (data.label_column); its columns: {', '.join(columns)}")
        return given
    found = [c for c in columns if hasattr(dataset.features[c], "int2str")]
    found = found or [c for c in columns if c.lower() in LABEL_NAMES and c != image_column]
    if len(found) != 1:
        why = f"candidates: {', '.join(found)}" if found else "no ClassLabel column and none named label"
        raise DataError(f"{where}: cannot tell which column holds the label ({why}); set data.label_column")
    return found[0]


def raw_images(dataset: Any, image_column: str) -> Any:
    """The dataset reduced to its image column, returning stored bytes (``Image(decode=False)``) — memory-mapped,
    pickled as its file paths (DataLoader workers map the same files again)."""
    import datasets

    images = dataset.select_columns([image_column])
    if isinstance(images.features[image_column], datasets.Image):
        images = images.cast_column(image_column, datasets.Image(decode=False))
    return images


def image_bytes(value: Any, where: str) -> bytes:
    """The encoded image of one stored value: bytes, or an Image's ``{bytes, path}`` (the file read when only the
    path is stored)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            try:
                return Path(value["path"]).read_bytes()
            except OSError as exc:
                raise DataError(f"{where}: image file {value['path']} not readable ({exc.strerror})") from None
    elif isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise DataError(f"{where}: no image in this row")


def _batches(dataset: Any, column: str) -> Iterator[Any]:
    """Arrow arrays of ``column``, a batch of rows at a time."""
    for table in dataset.select_columns([column]).with_format("arrow").iter(batch_size=BATCH):
        yield table.column(column).combine_chunks()


def _row_bytes(images: Any, column: str, row: int, where: str) -> bytes:
    return image_bytes(images[row][column], where)


def check_images(images: Any, image_column: str, where: str) -> Iterator[str | None]:
    """Per row: None when its image passes the header check, else the DataError's message. Only the first 32 bytes
    are sliced from the map; a whole image is read only when its signature is not a known one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    row = 0
    for array in _batches(images, image_column):
        encoded = array.field("bytes") if pa.types.is_struct(array.type) else array
        for head in pc.binary_slice(encoded, 0, 32).to_pylist():
            at = f"{where} row {row}"
            whole = partial(_row_bytes, images, image_column, row, at)
            try:
                check_image_head(whole()[:32] if head is None else head, whole, at)  # None: a path, or nothing
                yield None
            except DataError as exc:
                yield str(exc)
            row += 1


def read_labels(dataset: Any, label_column: str) -> Iterator[str | None]:
    """Per row: its label as text (a ClassLabel's name), None when it has none (null, or ClassLabel's -1)."""
    feature = dataset.features[label_column]
    names = getattr(feature, "int2str", None)
    for array in _batches(dataset, label_column):
        for value in array.to_pylist():
            if value is None or (names and value < 0):
                yield None
            else:
                text = names(value) if names else str(value).strip()
                yield text or None
