"""The data-section fields that say how a source is cut into train/val/test, defined once for every task.

Each field is an ``Annotated`` type carrying its bounds and its one description, so a task whose default differs
redeclares only the default (``val_size: ValSize = 5000``) and keeps the bounds and the wording. The bases
group the fields tasks share:

* ``SplitConfig``: ``split_seed`` and ``limit`` (first N training items) — every task that shuffles items;
* ``FractionSplitConfig``: + ``val_fraction`` / ``test_fraction``, shares of the items (texts, sentence pairs),
  and ``limit`` taking N items of every split;
* ``HeldOutSplitConfig``: + ``val_size`` / ``test_size``, a share (<1) or a count (≥1) of images or clips.

Lives in data/ (not the tasks root) because data/speech.py's config uses the fields too.
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import Field

from modelforge.core.config import StrictConfig

SplitSeed = Annotated[int, Field(description="seed of the train/val/test split (independent of train.seed)")]
Limit = Annotated[Optional[int], Field(ge=1, description="use only the first N training items (quick runs)")]
SpreadLimit = Annotated[Optional[int], Field(ge=1, description="use only N items of every split, evenly spread "
                                                               "(quick runs)")]
ValFraction = Annotated[float, Field(ge=0, lt=1, description="share of the data held out for validation (when the "
                                                               "source brings no validation split)")]
TestFraction = Annotated[float, Field(ge=0, lt=1, description="share of the data held out for test (when the "
                                                                "source brings no test split)")]
ValSize = Annotated[float, Field(ge=0, description="validation share (<1) or count (≥1) held out of training")]
TestSize = Annotated[float, Field(ge=0, description="test share (<1) or count (≥1), when the source has no test split")]


class SplitConfig(StrictConfig):
    split_seed: SplitSeed = 0
    limit: Limit = None


class FractionSplitConfig(SplitConfig):
    # these sources are cut by a hash of each item, so a quick run takes an even spread of every split instead
    limit: SpreadLimit = None
    val_fraction: ValFraction = 0.1
    test_fraction: TestFraction = 0.1


class HeldOutSplitConfig(SplitConfig):
    val_size: ValSize = 0.1
    test_size: TestSize = 0.2
