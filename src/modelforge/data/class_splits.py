"""The one check every classifier task runs on its splits before a model is built.

A classifier cannot learn from one class (it would predict it everywhere and score a perfect, meaningless
accuracy), an empty split cannot be evaluated (the mean loss divides by zero), and a training split holding a single
class teaches nothing. A held-out split with a single class is allowed: accuracy, macro-F1 over the training classes
and the confusion matrix are all defined for it (a small validation set of a rare-class dataset can be like that).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from modelforge.core.errors import DataError

HELD_OUT_HINT = "raise data.val_size/data.test_size (or set it to 0 for no such split), or add data"


def check_classifier_splits(labels: Mapping[str, Sequence[Hashable] | Any], classes: Sequence[Any],
                            source: str) -> None:
    """Refuse (one ``DataError`` line naming ``source``) fewer than 2 classes, an empty split, or a training split
    with a single class. ``labels`` maps each split present ("train", "val", "test") to its labels (any sequence or
    array; class indices or names)."""
    if len(classes) < 2:
        found = ", ".join(repr(str(c)) for c in classes) or "none"
        raise DataError(f"{source}: a classifier needs at least 2 classes, found {len(classes)} ({found})")
    for split, values in labels.items():
        if len(values) == 0:
            hint = "lower data.val_size/data.test_size or add data" if split == "train" else HELD_OUT_HINT
            raise DataError(f"{source}: the {split} split is empty; {hint}")
    train = labels["train"]
    if isinstance(train, np.ndarray):  # a large split's labels: counted in C, not item by item
        distinct = {_plain(v) for v in np.unique(train)}
    else:
        distinct = {_plain(v) for v in train}
    if len(distinct) < 2:
        only = next(iter(distinct))
        name = classes[only] if isinstance(only, int) and 0 <= only < len(classes) else only
        raise DataError(f"{source}: every training example has the class {str(name)!r}; a classifier needs at "
                        "least 2 classes to learn from (check the split or data.limit)")


def _plain(value: Any) -> Hashable:
    """A NumPy/torch scalar as a Python value, so class 3 and tensor(3) count once."""
    return value.item() if hasattr(value, "item") else value
