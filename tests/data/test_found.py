"""The found line: where each split came from, for a main file and for train/ val/ test/ folders."""

from modelforge.data.found import files_found, split_folders_found


def test_files_found_names_own_files_and_what_was_split_off():
    line = files_found("pairs.jsonl", {"train": 30, "val": 2, "test": 5}, "pairs.jsonl", {"test": "test.jsonl"},
                       " by hash", detail="37 pairs")
    assert line == ("found pairs.jsonl: 37 pairs · train 30 (pairs.jsonl); val 2 (split off pairs.jsonl by hash); "
                    "test 5 (test.jsonl)")


def test_split_folders_found_tells_subfolders_from_one_held_out_whole():
    sizes = {"train": 6, "val": 1, "test": 2}
    assert split_folders_found("data/scans", "data/scans", ["train", "test"], sizes, {"a": 3, "b": 3}) == (
        "found data/scans: 2 classes (a 3, b 3) · train 6 (scans/train); val 1 (split off scans/train); "
        "test 2 (scans/test)")
    assert split_folders_found("x", "data/scans", ["all"], sizes).endswith(
        "train 6 (scans); val 1 (split off scans); test 2 (split off scans)")
