"""Deterministic train/val/test splits.

Three ways, each reproducible across processes, machines and Python versions:

- ``split_by_hash``: each key goes to a split by a hash of ``seed:key`` alone, so an item keeps its split when the
  dataset grows or is reordered (and exact duplicates, having the same key, never straddle train and test).
- ``split_indices``: a seeded NumPy permutation cut to exact sizes, for data with no natural key.
- ``split_groups``: whole groups (a Bible book, a speaker, a movie) go to one split, so the test set holds only
  groups the model never saw; sizes follow the fractions as closely as whole groups allow.

Fractions are a mapping such as ``{"train": 0.8, "val": 0.1, "test": 0.1}``; its order is the order of the splits.
Every function returns ``{split name: sorted list of indices}``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from modelforge.core.errors import ConfigError, DataError

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
_HASH_SPAN = float(2**64)


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that is the same in every process (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validate split fractions: at least one split, none negative, summing to 1."""
    fractions = dict(fractions)
    if not fractions:
        raise ConfigError("split fractions are empty; give e.g. {'train': 0.8, 'val': 0.1, 'test': 0.1}")
    bad = {name: f for name, f in fractions.items() if not (isinstance(f, (int, float)) and 0 <= f <= 1)}
    if bad:
        raise ConfigError(f"split fractions must be numbers in [0, 1], got {bad}")
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions {fractions} sum to {total:g}, not 1; adjust them so they add up to 1")
    return fractions


def split_by_hash(
    keys: Iterable[str], fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[int]]:
    """Assign item ``i`` to a split by where ``stable_hash(f"{seed}:{keys[i]}")`` falls in [0, 1)."""
    fractions = check_fractions(fractions)
    names = list(fractions)
    bounds = np.cumsum([fractions[n] for n in names])
    bounds[-1] = 1.0  # guard against float round-off leaving a sliver unassigned
    out: dict[str, list[int]] = {name: [] for name in names}
    for i, key in enumerate(keys):
        position = stable_hash(f"{seed}:{key}") / _HASH_SPAN
        slot = min(int(np.searchsorted(bounds, position, side="right")), len(names) - 1)
        out[names[slot]].append(i)
    return out


def _exact_sizes(n: int, fractions: dict[str, float]) -> list[int]:
    """Split ``n`` into integer sizes proportional to the fractions (largest remainder, ties to the earlier split)."""
    raw = [n * f for f in fractions.values()]
    sizes = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def split_indices(n: int, fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0) -> dict[str, list[int]]:
    """Cut a seeded permutation of ``range(n)`` into splits of exactly proportional size."""
    if n < 0:
        raise ConfigError(f"cannot split a negative number of items ({n})")
    fractions = check_fractions(fractions)
    permutation = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[int]] = {}
    start = 0
    for name, size in zip(fractions, _exact_sizes(n, fractions), strict=True):
        out[name] = sorted(int(i) for i in permutation[start : start + size])
        start += size
    return out


def split_groups(
    groups: Sequence[Hashable], fractions: Mapping[str, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> dict[str, list[int]]:
    """Split items so that all items of one group share a split; ``groups[i]`` is item ``i``'s group.

    The distinct groups are shuffled with a seeded generator and laid end to end, weighted by their item counts; a
    group goes to the split in which its midpoint falls. A split with a positive fraction that would stay empty (one
    huge group swallowing a small split) takes the smallest group of the split holding the most groups, as long as
    there are at least as many groups as such splits.
    """
    fractions = check_fractions(fractions)
    names = list(fractions)
    # Sort by a stable text form so the shuffle does not depend on first-appearance order or on hash salting.
    distinct = sorted(set(groups), key=lambda g: (type(g).__name__, str(g)))
    members: dict[Hashable, list[int]] = {g: [] for g in distinct}
    for i, g in enumerate(groups):
        members[g].append(i)
    order = [distinct[i] for i in np.random.default_rng(seed).permutation(len(distinct))]
    total = max(len(groups), 1)
    bounds = np.cumsum([fractions[n] for n in names])
    bounds[-1] = 1.0
    assigned: dict[str, list[Hashable]] = {name: [] for name in names}
    filled = 0
    for g in order:
        size = len(members[g])
        midpoint = (filled + size / 2) / total
        slot = min(int(np.searchsorted(bounds, midpoint, side="right")), len(names) - 1)
        assigned[names[slot]].append(g)
        filled += size
    _fill_empty_splits(assigned, fractions, members)
    return {name: sorted(i for g in assigned[name] for i in members[g]) for name in names}


def _fill_empty_splits(
    assigned: dict[str, list[Hashable]], fractions: dict[str, float], members: dict[Hashable, list[int]]
) -> None:
    wanted = [name for name, f in fractions.items() if f > 0]
    if len(members) < len(wanted):
        return  # fewer groups than splits: some split must stay empty
    for name in wanted:
        if assigned[name]:
            continue
        donor = max(wanted, key=lambda n: (len(assigned[n]), -list(fractions).index(n)))
        smallest = min(assigned[donor], key=lambda g: (len(members[g]), str(g)))
        assigned[donor].remove(smallest)
        assigned[name].append(smallest)


def holdout_split(n: int, size: float, seed: int, what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (keep, held-out) sorted index arrays; ``size`` is a share (<1) or a whole count (≥1); 0 holds
    out nothing. A size that is neither (1.5), or a share too small to hold out a single item, is refused rather
    than silently rounded to a split of one item or none."""
    if size >= 1 and size != int(size):
        raise DataError(f"data.val_size/data.test_size = {size:g} is neither a share (< 1) nor a whole count (≥ 1)")
    count = int(round(size * n)) if size < 1 else int(size)
    if size > 0 and count == 0:
        raise DataError(f"data.val_size/data.test_size = {size:g} holds out none of {n} {what}; raise it, or set 0 "
                        "for no such split")
    if not 0 <= count < n:
        raise DataError(f"cannot hold out {count} of {n} {what}; lower data.val_size/data.test_size")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[count:]), np.sort(order[:count])


def stratified_holdout(labels: Sequence[Hashable], size: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """(kept, held out): ``size`` items held out with every label in proportion to its count (systematic sampling
    over each label's seeded shuffle), so a small validation set still has the label mix of the data. Item ``i``
    of a label with ``n`` items whose seeded shuffle puts it at ``rank`` gets the key ``(rank + offset) / n``; the
    ``size`` smallest keys (ties: the lower index) are held out. NumPy arrays, not a Python object per item."""
    rng = np.random.default_rng(seed)
    codes: dict[Hashable, int] = {}  # labels in order of first appearance, as their shuffles are drawn
    ids = np.fromiter((codes.setdefault(label, len(codes)) for label in labels), dtype=np.int64, count=len(labels))
    grouped = np.argsort(ids, kind="stable")  # each label's items, ascending, label after label
    keys, start = np.empty(len(ids)), 0
    for count in np.bincount(ids, minlength=len(codes)).tolist():
        members = grouped[start:start + count]
        order = rng.permutation(count)
        offset = rng.random()
        keys[members[order]] = (np.arange(count) + offset) / count
        start += count
    ranked = np.lexsort((np.arange(len(ids)), keys))  # by key, then by index
    held = np.sort(ranked[: max(0, min(size, len(ids) - 1))])
    kept = np.ones(len(ids), dtype=bool)
    kept[held] = False
    return np.flatnonzero(kept).tolist(), held.tolist()
