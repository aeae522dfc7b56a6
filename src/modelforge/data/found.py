"""The one line every run on the user's files states about what it read: files, classes with counts, split sizes
and where each split came from. It is printed by ``modelforge train`` and kept in results.json and the report
(``summary["data"]["found"]``), so a wrong folder, a missing class or a test set split off by accident shows at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping


def class_counts(labels: Iterable[str], names: list[str]) -> dict[str, int]:
    """Count per class name, in ``names`` order."""
    counts = Counter(labels)
    return {name: counts.get(name, 0) for name in names}


def found_line(read: str, classes: Mapping[str, int] | None, splits: Mapping[str, tuple[int, str]],
               detail: str | None = None) -> str:
    """``read``: what was read (files, columns); ``classes``: training count per class; ``splits``: name → (size,
    where it came from); ``detail``: what else counts for the task (pairs, vocabulary)."""
    parts = [f"found {read}"]
    if classes:
        shown = ", ".join(f"{name} {count}" for name, count in list(classes.items())[:12])
        more = f", … {len(classes) - 12} more" if len(classes) > 12 else ""
        parts.append(f"{len(classes)} classes ({shown}{more})")
    if detail:
        parts.append(detail)
    parts.append("; ".join(f"{name} {size} ({origin})" for name, (size, origin) in splits.items()))
    return ": ".join(parts[:1] + [" · ".join(parts[1:])])


def files_found(read: str, sizes: Mapping[str, int], base: str, own: Mapping[str, str | None] | None = None,
                how: str = "", classes: Mapping[str, int] | None = None, detail: str | None = None) -> str:
    """The found line of a task whose splits come from the user's files: a split named in ``own`` (split → the file
    or folder it was read from) came from there, train otherwise from ``base``, and every other split was held out
    of ``base`` (``how``: by what, e.g. " by hash")."""
    own = own or {}
    splits = {split: (size, own.get(split) or (base if split == "train" else f"split off {base}{how}"))
              for split, size in sizes.items()}
    return found_line(read, classes, splits, detail)


def split_folders_found(read: str, location: str, read_splits: Iterable[str], sizes: Mapping[str, int],
                        classes: Mapping[str, int] | None = None, detail: str | None = None) -> str:
    """The found line of a source that reads the ``train``/``val``/``test`` subfolders (or files) of ``location``
    where they exist, or all of ``location`` as one (``read_splits`` holding ``"all"``), and holds out the rest."""
    from pathlib import Path

    name = Path(location).name
    if "all" in read_splits:
        return files_found(read, sizes, name, classes=classes, detail=detail)
    own = {split: f"{name}/{split}" for split in read_splits}
    return files_found(read, sizes, f"{name}/train", own, classes=classes, detail=detail)
