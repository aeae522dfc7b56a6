"""Which data source a recipe reads: naming your own files selects the source that reads them.

Tasks with both built-in datasets and a source for the user's files take the files from ``data.path`` (and a few
sibling keys). Giving such a key on the command line (``data.path=reviews.csv``) switches a recipe written for a
built-in dataset to the file source; a recipe that names both a built-in source and a file explicitly is refused,
so a built-in dataset is never trained on silently in place of the user's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelforge.core.errors import ConfigError


@dataclass(frozen=True)
class FileSource:
    """The source that reads the user's files, and the ``data.*`` keys that name those files."""

    source: str
    keys: tuple[str, ...]


# Per task: the file sources, the first whose keys are given wins (segmentation: annotations → coco, else folder).
FILE_SOURCES: dict[str, tuple[FileSource, ...]] = {
    "text_classification": (FileSource("file", ("path", "val_path", "test_path")),),
    # imagenet: a pretrained ImageNet network, scored on an ImageNet-layout val folder when data.path names one
    "image_classification": (FileSource("folder", ("path",)), FileSource("imagenet", ("path",))),
    "detection": (FileSource("coco", ("annotations", "path")),),
    "segmentation": (FileSource("coco", ("annotations",)), FileSource("folder", ("path",))),
    "speech_recognition": (FileSource("manifest", ("path",)),),
    "audio_classification": (FileSource("manifest", ("path",)),),
    "translation": (FileSource("parallel", ("path", "val_path", "test_path")),),
    "summarization": (FileSource("parallel", ("path", "val_path", "test_path")),),
    "language_modeling": (FileSource("file", ("path",)),),
    "word_embeddings": (FileSource("file", ("path",)),),
    "video_classification": (FileSource("folder", ("path",)),),
    "image_captioning": (FileSource("files", ("path", "images_dir")),),
    "image_text_retrieval": (FileSource("files", ("path", "images_dir")),),
}


def _named(data: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if data.get(key) not in (None, "")]


def file_source_for(task: str, data: dict[str, Any]) -> FileSource | None:
    """The file source whose keys ``data`` gives a value to, if any."""
    for rule in FILE_SOURCES.get(task, ()):
        if _named(data, rule.keys):
            return rule
    return None


def _file_source_names(task: str) -> set[str]:
    return {rule.source for rule in FILE_SOURCES.get(task, ())}


def select_for_overrides(task: str, data: dict[str, Any], overridden: set[str]) -> None:
    """In place: when the overrides name files (``data.path=…``) but not ``data.source``, switch the recipe's
    built-in source to the file source (a recipe written for Rotten Tomatoes then reads the user's table)."""
    if "source" in overridden:
        return
    rule = file_source_for(task, {key: data.get(key) for key in overridden})
    if rule is not None and data.get("source") not in _file_source_names(task):
        data["source"] = rule.source


def check_source(task: str, data: dict[str, Any]) -> None:
    """In place: a recipe without ``data.source`` that names files reads them; one that names a built-in source and
    files at the same time is a ``ConfigError`` (which one was meant cannot be guessed)."""
    rule = file_source_for(task, data)
    if rule is None:
        return
    source = data.get("source")
    if source is None:
        data["source"] = rule.source
    elif source not in _file_source_names(task):
        named = ", ".join(f"data.{key}" for key in _named(data, rule.keys))
        raise ConfigError(
            f"{named} names your own files but data.source={source} is a built-in dataset; drop data.source "
            f"(or set data.source={rule.source}) to train on your files, or drop {named} to use {source}"
        )
