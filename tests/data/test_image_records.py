"""Image classification from a Hugging Face dataset and from WebDataset tar shards, read per item: the same pixels as
the same files in an image folder, the sources' own splits and sorted labels, bad images skipped and counted or
failing with one line naming shard and member (or row), random access by the tar index, workers, cheap pickling."""

import logging
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from image_records_data import add_member, encoded_images, write_folder, write_saved_dataset, write_shards

from modelforge.core.errors import DataError
from modelforge.data.formats import image_folder
from modelforge.data.formats.image_folder import index_image_folder
from modelforge.data.formats.image_records import class_order, index_image_records
from modelforge.data.formats.records import detect_format
from modelforge.data.formats.tar_index import index_tar_images
from modelforge.data.lazy_images import ImageFileDataset
from modelforge.tasks.recipes import load_recipe
from modelforge.training.batches import epoch_order, iterate


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


def _by_name(dataset, names):
    return {name: dataset[i] for i, name in enumerate(names)}


@pytest.mark.parametrize(("channels", "size"), [(1, 9), (3, 9), (3, 10)])  # 10: PNGs that need no resize
def test_a_dataset_and_shards_give_the_folders_pixels_and_labels(tmp_path, channels, size):
    items = encoded_images(40)
    folder = write_folder(tmp_path / "folder", items)
    index = index_image_folder(folder, folder)
    fast = [image_folder._decode_png_as_is(raw, channels, size) is not None for _, _, raw in items]
    assert any(fast) == (size == 10)  # OpenCV's path for PNGs that need no change, Pillow's for the rest
    from_folder = _by_name(ImageFileDataset(folder, index.paths, index.labels, channels, size),
                           [p.decode().split("/")[1] for p in index.paths])
    sources = {"hf": write_saved_dataset(tmp_path / "saved", {"train": items}),
               "webdataset": write_shards(tmp_path / "shards", items)}
    for fmt, path in sources.items():
        assert detect_format(str(path)) == fmt
        records = index_image_records(str(path), fmt)
        assert records.classes == index.classes == ["dark", "light"]  # sorted, as a folder's (ClassLabel: light, dark)
        ids, labels = records.parts["train"]
        dataset = records.make(ids, labels, channels, size)
        assert len(dataset) == 40 and dataset.loads_from_disk
        # a row of the dataset is the item of that number; a shard sample is named by its member
        names = [items[i][1] if fmt == "hf" else dataset.encoded(i)[1].split(": ")[-1] for i in ids]
        for name, (x, y) in _by_name(dataset, names).items():
            assert x.dtype == torch.uint8 and x.shape == (channels, size, size)
            assert torch.equal(x, from_folder[name][0]), (fmt, name)
            assert int(y) == int(from_folder[name][1]), (fmt, name)


def test_the_sources_own_splits_are_kept(tmp_path):
    items = encoded_images(40)
    saved = write_saved_dataset(tmp_path / "saved", {"train": items[:30], "validation": items[30:36],
                                                     "test": items[36:]})
    records = index_image_records(str(saved), "hf")
    assert {k: len(v[0]) for k, v in records.parts.items()} == {"train": 30, "val": 6, "test": 4}
    val = records.make(*records.parts["val"], 3, 8)
    assert torch.equal(val[0][0], records.make(np.asarray([30]), np.asarray([0]), 3, 8)[0][0])  # rows after train's
    shards = tmp_path / "shards"
    write_shards(shards, items[:30], count=2, prefix="train")
    write_shards(shards, items[30:], count=1, prefix="val")
    records = index_image_records(str(shards), "webdataset")
    assert {k: len(v[0]) for k, v in records.parts.items()} == {"train": 30, "val": 10}


def test_random_access_reads_only_the_indexed_member(tmp_path):
    items = encoded_images(12)
    shards = write_shards(tmp_path / "shards", items, count=2)
    index = index_tar_images(sorted(shards.glob("*.tar")))
    assert index.labels[:3] == ["dark", "dark", "dark"]  # shard 0 holds items 0, 2, 4, …
    with tarfile.open(shards / "shard-001.tar") as tar:
        member = tar.getmember("0005.png")
        expected = tar.extractfile(member).read()
    position = int(np.flatnonzero(index.names == b"0005.png")[0])
    with open(shards / "shard-001.tar", "rb") as file:
        file.seek(int(index.offset[position]))
        assert file.read(int(index.size[position])) == expected == items[5][2]


def _corrupt_shards(tmp_path, junk):
    shards = write_shards(tmp_path / "shards", encoded_images(20), count=2)
    with tarfile.open(shards / "shard-001.tar", "a") as tar:
        add_member(tar, "bad.png", junk)
        add_member(tar, "bad.cls", b"dark")
        add_member(tar, "lost.cls", b"light")  # a label without an image
    return shards


def test_bad_shard_members_are_skipped_and_counted_or_fail_naming_shard_and_member(tmp_path, caplog):
    shards = _corrupt_shards(tmp_path, b"\x89PNG\r\n\x1a\nnot really")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        records = index_image_records(str(shards), "webdataset")
    assert records.skipped == 2 and len(records.parts["train"][0]) == 20
    assert "shard-001.tar: bad.png: not a readable image" in caplog.text and "2 sample(s) of" in caplog.text
    assert "shard-001.tar: lost: no image member" in caplog.text
    with pytest.raises(DataError) as info:
        index_image_records(str(shards), "webdataset", on_error="fail")
    assert "shard-001.tar: bad.png: not a readable image" in str(info.value) and "\n" not in str(info.value)


def test_a_member_that_fails_only_when_decoded_stops_with_one_line_also_from_a_worker(tmp_path):
    items = encoded_images(8)
    label, name, raw = items[4]
    items[4] = (label, name, raw[: len(raw) // 2])  # the PNG header survives, the pixels do not
    shards = write_shards(tmp_path / "shards", items, count=1)
    records = index_image_records(str(shards), "webdataset")
    dataset = records.make(*records.parts["train"], 3, 8)
    assert len(dataset) == 8
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            list(iterate(dataset, epoch_order(8, 4, 0, 0, shuffle=False), torch.utils.data.default_collate, workers))
        assert f"shard-000.tar: {name}: not a readable image" in str(info.value) and "\n" not in str(info.value)


def test_a_bad_dataset_row_is_skipped_or_fails_naming_the_row(tmp_path, caplog):
    items = encoded_images(12)
    items[3] = (items[3][0], items[3][1], b"GIF89a but not really an image")
    items[7] = (items[7][0], items[7][1], b"plain text")
    saved = write_saved_dataset(tmp_path / "saved", {"train": items})
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        records = index_image_records(str(saved), "hf")
    assert records.skipped == 1 and 7 not in records.parts["train"][0] and 3 in records.parts["train"][0]
    assert "(train) row 7: not a readable image" in caplog.text
    with pytest.raises(DataError, match=r"\(train\) row 7: not a readable image"):
        index_image_records(str(saved), "hf", on_error="fail")
    dataset = records.make(*records.parts["train"], 3, 8)
    with pytest.raises(DataError, match=r"row 3: not a readable image"):  # passed the signature check only
        dataset[int(np.flatnonzero(records.parts["train"][0] == 3)[0])]


def test_workers_give_the_same_batches_and_the_dataset_pickles_as_paths(tmp_path):
    items = encoded_images(40)
    saved = write_saved_dataset(tmp_path / "saved", {"train": items})
    records = index_image_records(str(saved), "hf")
    dataset = records.make(*records.parts["train"], 3, 8)
    assert len(pickle.dumps(dataset)) < sum(len(raw) for _, _, raw in items) / 4  # the Arrow file's path, not rows
    plan = epoch_order(len(dataset), 8, seed=3, epoch=1)
    main = list(iterate(dataset, plan, torch.utils.data.default_collate, 0))
    workers = list(iterate(dataset, plan, torch.utils.data.default_collate, 2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, workers, strict=True))


def test_columns_inferred_or_named(tmp_path):
    import datasets

    rows = {"picture": [{"bytes": raw, "path": None} for _, _, raw in encoded_images(10)],
            "cls": [str(i % 3 * 5) for i in range(10)], "other": list(range(10))}
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict(rows, features=datasets.Features({
        "picture": datasets.Image(), "cls": datasets.Value("string"), "other": datasets.Value("int64")})
    ).save_to_disk(str(saved))
    records = index_image_records(str(saved), "hf")
    assert (records.image_column, records.label_column) == ("picture", "cls")
    assert records.classes == ["0", "5", "10"]  # integer names sorted by value
    assert index_image_records(str(saved), "hf", label_column="other").classes == [str(i) for i in range(10)]
    with pytest.raises(DataError, match="no column 'photo'"):
        index_image_records(str(saved), "hf", image_column="photo")
    with pytest.raises(DataError, match="column 'cls' .* not images"):
        index_image_records(str(saved), "hf", image_column="cls")
    assert class_order({"b", "a", "10"}) == ["10", "a", "b"]


def test_the_task_holds_val_and_test_out_of_a_single_split_deterministically(tmp_path):
    from modelforge.tasks import get_task

    shards = write_shards(tmp_path / "shards", encoded_images(40))
    data = {"path": str(shards), "image_size": 8, "val_size": 0.2, "test_size": 0.2}
    recipe = load_recipe({"name": "r", "task": "image_classification", "data": data, "model": {"name": "mlp"}})
    first, second = (get_task("image_classification")(recipe).datasets() for _ in range(2))
    assert (len(first.train), len(first.val), len(first.test)) == (26, 6, 8)  # val: a share of what test left
    assert first.test.ids.tolist() == second.test.ids.tolist() and first.val.ids.tolist() == second.val.ids.tolist()
    assert "webdataset" in first.summary["found"] and "2 classes" in first.summary["found"]


def test_parquet_files_with_an_image_column_read_like_the_saved_folder(tmp_path):
    import datasets

    items = encoded_images(20)
    saved = write_saved_dataset(tmp_path / "saved", {"train": items})
    (tmp_path / "pq").mkdir()
    datasets.load_from_disk(str(saved))["train"].to_parquet(str(tmp_path / "pq" / "train-00000.parquet"))
    assert detect_format(str(tmp_path / "pq")) == "hf"
    from_saved, from_parquet = (index_image_records(str(p), "hf") for p in (saved, tmp_path / "pq"))
    assert from_parquet.classes == from_saved.classes and from_parquet.image_column == "image"
    a, b = (r.make(*r.parts["train"], 3, 8) for r in (from_saved, from_parquet))
    assert torch.equal(a.pixels(range(20)), b.pixels(range(20))) and torch.equal(a.targets, b.targets)


def test_shard_members_chosen_by_extension_or_named(tmp_path):
    items = encoded_images(12)
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "shard-000.tar", "w") as tar:
        for i, (label, name, raw) in enumerate(items):
            add_member(tar, f"s/{i:03d}.photo.{name.split('.')[1]}", raw)  # key s/000, extension photo.png
            add_member(tar, f"s/{i:03d}.mask.png", items[0][2])
            add_member(tar, f"s/{i:03d}.json", f'{{"label": "{label}", "id": {i % 3}}}'.encode())
    with pytest.raises(DataError, match="more than one image member .* set data.image_column"):
        index_image_records(str(shards), "webdataset", on_error="fail")
    records = index_image_records(str(shards), "webdataset", image_column="mask.png", on_error="fail")
    assert records.classes == ["dark", "light"] and records.label_column == "label"  # the .json field
    assert index_image_records(str(shards), "webdataset", image_column="mask.png", label_column="id").classes == [
        "0", "1", "2"]
    shards_cls = write_shards(tmp_path / "cls", items)
    records = index_image_records(str(shards_cls), "webdataset")
    assert (records.image_column, records.label_column) == (None, "cls")  # png and jpg images: no one extension


def test_a_binary_column_of_encoded_images_with_int_labels(tmp_path):
    import datasets

    items = encoded_images(12)
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"png": [raw for _, _, raw in items], "label": [i % 2 * 7 for i in range(12)]},
                               features=datasets.Features({"png": datasets.Value("binary"),
                                                           "label": datasets.Value("int64")})).save_to_disk(str(saved))
    records = index_image_records(str(saved), "hf")
    assert (records.image_column, records.label_column, records.classes) == ("png", "label", ["0", "7"])
    dataset = records.make(*records.parts["train"], 1, 8)
    folder = write_folder(tmp_path / "folder", items)
    assert torch.equal(dataset[3][0], ImageFileDataset(folder, np.asarray([f"light/{items[3][1]}".encode()]),
                                                       np.zeros(1), 1, 8)[0][0])


def test_a_held_out_split_without_labels_is_not_used(tmp_path, caplog):
    import datasets

    items = encoded_images(24)
    saved = write_saved_dataset(tmp_path / "saved", {"train": items[:16], "test": items[16:]})
    unlabelled = datasets.load_from_disk(str(saved))
    unlabelled["test"] = unlabelled["test"].map(lambda row: {"label": -1})  # the Hub's test splits: label -1
    unlabelled.save_to_disk(str(tmp_path / "unlabelled"))
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        records = index_image_records(str(tmp_path / "unlabelled"), "hf", on_error="fail")
    assert set(records.parts) == {"train"} and records.skipped == 0
    assert "(test): no labels in this split: not used" in caplog.text
    assert records.make(*records.parts["train"], 3, 8)[15][0].shape == (3, 8, 8)


def test_an_image_folder_is_told_from_a_dataset_without_walking_it(tmp_path, monkeypatch):
    from modelforge.data.formats import hf_dataset

    folder = tmp_path / "images"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(50):
            (folder / label / f"{i}.png").write_bytes(b"")
    (folder / "dog" / "notes").mkdir()
    (folder / "dog" / "notes" / "extra.jsonl").write_text("{}\n")  # below the images: an image folder still
    listed = []
    real = os.scandir
    monkeypatch.setattr(hf_dataset.os, "scandir", lambda path: listed.append(path) or real(path))
    assert detect_format(str(folder)) is None
    inside = [path for path in map(str, listed) if path.startswith(f"{folder}/")]
    assert len(inside) == 1  # one class folder listed: the walk stops at the first image
    nested = tmp_path / "hub" / "plain_text" / "train"
    nested.mkdir(parents=True)
    (nested / "0000.parquet").write_bytes(b"")
    assert hf_dataset.holds_data_files(tmp_path / "hub") and detect_format(str(tmp_path / "hub")) == "hf"


def test_a_source_with_its_own_validation_split_still_holds_out_a_test_split(tmp_path):
    """Shards of train-* and val-* (the ImageNet layout's pattern): val is the source's own, test a share of train."""
    from modelforge.tasks import get_task

    shards = write_shards(tmp_path / "shards", encoded_images(40)[:30], count=1, prefix="train")
    write_shards(shards, encoded_images(40)[30:], count=1, prefix="val")
    data = {"path": str(shards), "image_size": 8, "test_size": 0.2}
    recipe = load_recipe({"name": "r", "task": "image_classification", "data": data, "model": {"name": "mlp"}})
    splits = get_task("image_classification")(recipe).datasets()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 10, 6)
    assert set(splits.test.ids.tolist()).isdisjoint(splits.train.ids.tolist())
    assert "test 6 (split off shards (train))" in splits.summary["found"], splits.summary["found"]
