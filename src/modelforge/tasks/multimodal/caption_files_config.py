"""The data fields both image–text tasks (captioning, retrieval) take for the user's caption files."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from modelforge.data.split_config import FractionSplitConfig


class CaptionFilesConfig(FractionSplitConfig):
    path: Optional[str] = Field(None, description="files: a captions CSV/TSV/JSONL, a COCO captions_*.json, or a "
                                                  "folder holding one (or train/ val/ test/ subfolders that do)")
    images_dir: Optional[str] = Field(None, description="files: folder the image paths are relative to")
    image_column: str = "image"
    caption_column: str = "caption"
    on_error: Literal["skip", "fail"] = Field("skip", description="a missing/unreadable image: skip and count, or fail")
