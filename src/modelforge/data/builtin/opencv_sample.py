"""OpenCV's real sample video ``vtest.avi`` (pedestrians filmed from above; 795 frames of 768×576 at 10 fps).

It ships in Debian's ``opencv-doc`` package as ``/usr/share/doc/opencv-doc/examples/data/vtest.avi``. Debian
compresses some documentation files, so a ``vtest.avi.gz`` found instead is decompressed once into the cache.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.cache import cache_dir

INSTALL_HINT = "apt-get install opencv-doc"
SEARCH_DIRS = (
    Path("/usr/share/doc/opencv-doc/examples/data"),
    Path("/usr/share/opencv4/samples/data"),
    Path("/usr/share/opencv/samples/data"),
)


def _decompress(source: Path) -> Path:
    target = cache_dir("opencv-sample") / source.name.removesuffix(".gz")
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with gzip.open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)  # atomic: a killed process never leaves a half video in the cache
    except (OSError, EOFError) as exc:
        raise DataError(f"{source}: cannot decompress ({exc}); reinstall with `{INSTALL_HINT}`") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def vtest_path(search_dirs: Sequence[str | Path] = SEARCH_DIRS) -> Path:
    """Path of a playable ``vtest.avi``; MissingDependencyError naming the install command if there is none."""
    for directory in map(Path, search_dirs):
        plain, packed = directory / "vtest.avi", directory / "vtest.avi.gz"
        if plain.is_file():
            return plain
        if packed.is_file():
            return _decompress(packed)
    looked = ", ".join(str(d) for d in search_dirs)
    raise MissingDependencyError(f"OpenCV sample video vtest.avi not found (looked in {looked}): {INSTALL_HINT}")
