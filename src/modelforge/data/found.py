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


def found_line(read: str, classes: Mapping[str, int] | None, splits: Mapping[str, tuple[int, str]]) -> str:
    """``read``: what was read (files, columns); ``classes``: training count per class; ``splits``: name → (size,
    where it came from)."""
    parts = [f"found {read}"]
    if classes:
        shown = ", ".join(f"{name} {count}" for name, count in list(classes.items())[:12])
        more = f", … {len(classes) - 12} more" if len(classes) > 12 else ""
        parts.append(f"{len(classes)} classes ({shown}{more})")
    parts.append("; ".join(f"{name} {size} ({origin})" for name, (size, origin) in splits.items()))
    return ": ".join(parts[:1] + [" · ".join(parts[1:])])
