"""The tar index of each shard saved on disk, so a shard's headers are walked once — not on every run, and not by
every torchrun process.

One entry per shard, beside it in ``.modelforge-tokens/`` (the token files' folder; the modelforge cache when the
shard's folder is not writable): ``tar-index-P-S-R.npz`` with the image members' ``offset`` and ``size`` (int64),
``names`` (bytes) and ``label`` (int32, a position in the sidecar's ``label_names``), and ``tar-index-P-S-R.json``
(count, label names, skipped samples, the member kinds seen). ``P`` hashes the shard's resolved path, ``S`` its
size and modification time, ``R`` the selection rules (the image/label columns, the extension lists) and the
format version. Arrays are written first and the sidecar last, each to a temporary name and renamed; an entry is
used only when every array has the sidecar's count, so a killed build or a truncated file is rebuilt, never
trusted. Entries of older versions of the shard (another ``S``) are removed when the new one is written. A changed
shard re-walks only that shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelforge.core.atomic import atomic_write_bytes, atomic_write_json
from modelforge.data.token_file import build_lock, token_folder

FORMAT = 1
PREFIX = "tar-index"
log = logging.getLogger("modelforge.data")


@dataclass
class ShardIndex:
    """The usable samples of one shard, in member order, and what was skipped."""

    offset: np.ndarray  # (n,) int64: first byte of the image member's data
    size: np.ndarray  # (n,) int64: its length
    names: np.ndarray  # (n,) bytes: the image member's name
    labels: list[str]
    skipped: list[tuple[str, str]]  # (where, message); ``where`` and the message start with the shard's path
    image_sources: list[str]  # the image extensions used, sorted
    label_sources: list[str]  # the label members / .json fields used, sorted


def _digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", errors="surrogatepass") + b"\0")
    return digest.hexdigest()[:12]


def entry_stem(shard: Path, rules: dict[str, Any]) -> Path:
    """Where ``shard``'s entry for ``rules`` lives, without its suffix."""
    info = shard.stat()
    path_part = _digest(str(shard.resolve()))
    stat_part = _digest(str(info.st_size), str(info.st_mtime_ns))
    rules_part = _digest(f"{PREFIX}-format-{FORMAT}", json.dumps(rules, sort_keys=True))
    return token_folder(shard, fallback="tar_index") / f"{PREFIX}-{path_part}-{stat_part}-{rules_part}"


def cached_shard_index(shard: Path, rules: dict[str, Any], build: Callable[[], ShardIndex]) -> ShardIndex:
    """``shard``'s index from its entry, else ``build()`` it — under the folder's build lock, so processes started
    together build it once — and save it."""
    stem = entry_stem(shard, rules)
    found = load_entry(stem, shard)
    if found is not None:
        return found
    with build_lock(stem):
        found = load_entry(stem, shard)  # another process may have built it while this one waited
        if found is not None:
            return found
        index = build()
        try:
            save_entry(stem, shard, index)
        except OSError as exc:  # a full disk: this run goes on, the next walks the shard again
            log.warning("%s: the tar index could not be saved (%s)", shard, exc)
        return index


def save_entry(stem: Path, shard: Path, index: ShardIndex) -> None:
    label_names = sorted(set(index.labels))
    position = {name: i for i, name in enumerate(label_names)}
    buffer = io.BytesIO()
    np.savez(buffer, offset=index.offset.astype(np.int64), size=index.size.astype(np.int64),
             names=np.asarray(index.names, dtype=np.bytes_),
             label=np.asarray([position[y] for y in index.labels], dtype=np.int32))
    atomic_write_bytes(stem.with_suffix(".npz"), buffer.getvalue())
    atomic_write_json(stem.with_suffix(".json"), {
        "format": FORMAT, "shard": str(shard), "count": len(index.labels), "label_names": label_names,
        "skipped": index.skipped, "image_sources": index.image_sources, "label_sources": index.label_sources})
    _remove_older_versions(stem)


def _remove_older_versions(stem: Path) -> None:
    """Entries of the same shard path with another size or modification time: they can never be used again."""
    path_part, stat_part = stem.name.split("-")[2:4]
    for old in stem.parent.glob(f"{PREFIX}-{path_part}-*"):
        if old.name.split("-")[3] != stat_part:
            old.unlink(missing_ok=True)


def load_entry(stem: Path, shard: Path) -> ShardIndex | None:
    """The entry at ``stem``, or None when it is missing, of another format or inconsistent (a killed or truncated
    write: every array must have the sidecar's count)."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as data:
            arrays = {name: data[name] for name in ("offset", "size", "names", "label")}
        count, label_names = int(meta["count"]), list(meta["label_names"])
        if meta.get("format") != FORMAT or any(len(a) != count or a.ndim != 1 for a in arrays.values()):
            return None
        codes = arrays["label"]
        if count and (codes.min() < 0 or codes.max() >= len(label_names)):
            return None
        skipped = [_as_named(where, message, meta["shard"], str(shard)) for where, message in meta["skipped"]]
        return ShardIndex(arrays["offset"].astype(np.int64), arrays["size"].astype(np.int64), arrays["names"],
                          [label_names[c] for c in codes.tolist()], skipped, list(meta["image_sources"]),
                          list(meta["label_sources"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def _as_named(where: str, message: str, built_as: str, named: str) -> tuple[str, str]:
    """A skipped sample's messages naming the shard as this run does (the entry may come from a run that spelled
    its path otherwise)."""
    if built_as == named:
        return where, message
    return where.replace(built_as, named, 1), message.replace(built_as, named, 1)
