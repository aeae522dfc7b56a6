import subprocess
import sys

import pytest

from modelforge.core.errors import ConfigError
from modelforge.data.splits import check_fractions, split_by_hash, split_groups, split_indices, stable_hash

THIRDS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _assert_partition(splits: dict[str, list[int]], n: int) -> None:
    seen = [i for idx in splits.values() for i in idx]
    assert sorted(seen) == list(range(n)), "every item is in exactly one split"
    for idx in splits.values():
        assert idx == sorted(idx)


def test_stable_hash_is_fixed_and_independent_of_python_hash_seed():
    assert stable_hash("hello") == 12085107955937391741
    assert stable_hash("") == 16476032584258269876
    assert 0 <= stable_hash("ñ") < 2**64
    code = "from modelforge.data.splits import stable_hash; print(stable_hash('hello'))"
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONHASHSEED": "123"}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "12085107955937391741"


def test_split_by_hash_partitions_with_the_requested_proportions():
    keys = [f"item-{i}" for i in range(20_000)]
    splits = split_by_hash(keys, THIRDS, seed=0)
    _assert_partition(splits, len(keys))
    assert list(splits) == ["train", "val", "test"]
    assert abs(len(splits["train"]) / 20_000 - 0.8) < 0.015
    assert abs(len(splits["test"]) / 20_000 - 0.1) < 0.01
    assert split_by_hash(keys, THIRDS, seed=0) == splits
    assert split_by_hash(keys, THIRDS, seed=1) != splits


def test_split_by_hash_keeps_each_key_in_its_split_when_data_grows_or_moves():
    keys = [f"review {i}" for i in range(500)]
    before = split_by_hash(keys, THIRDS)
    where = {keys[i]: name for name, idx in before.items() for i in idx}
    grown = list(reversed(keys)) + [f"new {i}" for i in range(300)]
    after = split_by_hash(grown, THIRDS)
    for name, idx in after.items():
        for i in idx:
            if grown[i] in where:
                assert where[grown[i]] == name


def test_split_by_hash_puts_duplicates_together():
    keys = ["same text", "other", "same text", "x", "same text"]
    splits = split_by_hash(keys, {"a": 0.5, "b": 0.5})
    holder = [name for name, idx in splits.items() if 0 in idx][0]
    assert {0, 2, 4} <= set(splits[holder])


def test_split_indices_has_exact_sizes_and_is_seeded():
    splits = split_indices(10, THIRDS, seed=3)
    assert [len(v) for v in splits.values()] == [8, 1, 1]
    _assert_partition(splits, 10)
    assert split_indices(10, THIRDS, seed=3) == splits
    # 7 items in thirds: largest remainders are equal, so the earlier splits take the spare items
    assert [len(v) for v in split_indices(7, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}).values()] == [3, 2, 2]
    assert [len(v) for v in split_indices(0, THIRDS).values()] == [0, 0, 0]
    assert split_indices(1000, THIRDS, seed=0) != split_indices(1000, THIRDS, seed=1)


def test_split_groups_keeps_groups_whole_and_follows_fractions():
    groups = [f"book{i % 40}" for i in range(4000)]
    splits = split_groups(groups, THIRDS, seed=0)
    _assert_partition(splits, len(groups))
    owners = {}
    for name, idx in splits.items():
        for i in idx:
            assert owners.setdefault(groups[i], name) == name, "a group never straddles two splits"
    assert abs(len(splits["train"]) / 4000 - 0.8) < 0.06
    assert split_groups(groups, THIRDS, seed=0) == splits
    assert split_groups(groups, THIRDS, seed=1) != splits


def test_split_groups_does_not_depend_on_item_order():
    groups = ["a", "b", "c", "d", "e", "f"] * 3
    by_group = {}
    for name, idx in split_groups(groups, {"x": 0.5, "y": 0.5}, seed=7).items():
        for i in idx:
            by_group[groups[i]] = name
    reordered = sorted(groups)
    for name, idx in split_groups(reordered, {"x": 0.5, "y": 0.5}, seed=7).items():
        for i in idx:
            assert by_group[reordered[i]] == name


def test_split_groups_gives_small_splits_a_group_even_next_to_a_huge_one():
    groups = ["huge"] * 1000 + ["s1"] * 5 + ["s2"] * 5 + ["s3"] * 5
    for seed in range(5):
        splits = split_groups(groups, THIRDS, seed=seed)
        assert all(splits[name] for name in THIRDS), f"seed {seed}: every split gets at least one group"
    few = split_groups(["only"] * 10, THIRDS)
    assert sorted(len(v) for v in few.values()) == [0, 0, 10]


@pytest.mark.parametrize(
    "fractions, message",
    [
        ({"train": 0.8, "test": 0.1}, "sum to 0.9"),
        ({"train": 1.2, "test": -0.2}, "in [0, 1]"),
        ({}, "empty"),
    ],
)
def test_bad_fractions_are_config_errors(fractions, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_fractions(fractions)
    with pytest.raises(ConfigError):
        split_indices(5, fractions)


def _stratified_by_tuples(labels, size, seed):
    """stratified_holdout as first written (a sorted list of (key, index) tuples): the arrays must agree with it."""
    import numpy as np

    rng = np.random.default_rng(seed)
    by_label = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keyed = []
    for members in by_label.values():
        order = rng.permutation(len(members))
        offset = rng.random()
        keyed += [((rank + offset) / len(members), members[j]) for rank, j in enumerate(order)]
    keyed.sort()
    held = sorted(i for _, i in keyed[: max(0, min(size, len(labels) - 1))])
    return [i for i in range(len(labels)) if i not in set(held)], held


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_holdout_gives_what_the_tuple_sort_gave(seed):
    import numpy as np

    from modelforge.data.splits import stratified_holdout

    rng = np.random.default_rng(seed)
    for n, classes, size in ((500, 3, 60), (97, 5, 10), (40, 1, 39), (12, 4, 0), (1, 1, 5), (0, 1, 3), (300, 2, 400)):
        labels = [f"c{int(k)}" for k in rng.integers(0, classes, size=n)]
        assert stratified_holdout(labels, size, seed) == _stratified_by_tuples(labels, size, seed)
