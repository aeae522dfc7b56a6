"""Image folders read lazily: the index lists files without opening one, pixels are decoded per item (in workers or
not), unreadable files are found at first touch, the synset map names WordNet-id folders, and an ImageNet-layout
folder trains through transfer-mobilenetv2."""

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

import modelforge
from modelforge.core.errors import DataError
from modelforge.data import lazy_images
from modelforge.data.formats import image_folder
from modelforge.data.formats.image_folder import index_image_folder, read_image_folder, read_synset_names
from modelforge.data.lazy_images import ImageFileDataset, channel_statistics
from modelforge.data.tensors import TensorDataset
from modelforge.training.batches import default_workers, epoch_order, iterate


def _folder(root, classes=("dark", "light"), per_class=5, suffix="png", size=12):
    rng = np.random.default_rng(1)
    for k, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(40 + 170 * k, 25, (size, size + 3, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label}_{i}.{suffix}")
    return root


def test_index_decodes_nothing_and_items_match_the_in_memory_reader(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d")
    in_memory = read_image_folder(root, channels=3, size=8)
    monkeypatch.setattr(image_folder, "decode_image", lambda *a: pytest.fail("the index decoded pixels"))
    index = index_image_folder(root, root)
    assert index.classes == ["dark", "light"] and index.labels.tolist() == in_memory.labels.tolist()
    assert index.paths[0] == b"dark/dark_0.png"
    monkeypatch.undo()
    dataset = ImageFileDataset(root, index.paths, index.labels, 3, 8)
    for i in (0, 7):
        x, y = dataset[i]
        assert x.dtype == torch.uint8 and torch.equal(x, torch.from_numpy(in_memory.images[i]))
        assert int(y) == in_memory.labels[i]
    assert torch.equal(dataset.subset([7, 0]).pixels([0, 1]), torch.from_numpy(in_memory.images[[7, 0]]))


def test_statistics_decode_only_a_spread_sample(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d")
    index = index_image_folder(root, root)
    dataset = ImageFileDataset(root, index.paths, index.labels, 1, 8)
    decoded = []
    real = lazy_images.decode_image
    monkeypatch.setattr(lazy_images, "decode_image",
                        lambda path, *a: decoded.append(os.fsdecode(os.path.basename(path))) or real(path, *a))
    mean, std = channel_statistics(dataset, sample=3)
    assert decoded == ["dark_0.png", "dark_4.png", "light_4.png"] and len(mean) == len(std) == 1
    x = torch.from_numpy(read_image_folder(root, 1, 8).images).float() / 255
    mean, std = channel_statistics(dataset)  # the folder is smaller than the sample: every image, as in memory
    assert mean == pytest.approx(x.mean(dim=(0, 2, 3)).tolist()) and std == pytest.approx(x.std(dim=(0, 2, 3)).tolist())


def test_the_index_opens_no_file_and_skips_only_what_is_not_named_an_image(tmp_path, caplog, monkeypatch):
    root = _folder(tmp_path / "d")
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "light" / "notes.txt").write_text("hello")
    (root / "light" / ".hidden.png").write_bytes(b"not an image either")
    (root / "light" / "more").mkdir()
    _folder(root / "light" / "more", classes=("deeper",), per_class=1)
    monkeypatch.setattr("builtins.open", lambda *a, **k: pytest.fail("the index opened a file"))
    monkeypatch.setattr("os.open", lambda *a, **k: pytest.fail("the index opened a file"))
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        index = index_image_folder(root, root, on_error="skip")
    monkeypatch.undo()
    assert [s[0].rsplit("/", 1)[-1] for s in index.skipped] == ["notes.txt"] and len(index.paths) == 12
    assert "1 file(s)" in caplog.text and "notes.txt: not an image file (suffix .txt)" in caplog.text
    # the order of sorted(Path.rglob): path parts compared in turn, sub-folders where their names sort
    assert index.paths[:2].tolist() == [b"dark/broken.png", b"dark/dark_0.png"]
    assert index.paths[6:9].tolist() == [b"light/light_0.png", b"light/light_1.png", b"light/light_2.png"]
    assert index.paths[-2:].tolist() == [b"light/light_4.png", b"light/more/deeper/deeper_0.png"]
    with pytest.raises(DataError, match="notes.txt: not an image file"):
        index_image_folder(root, root, on_error="fail")


def test_an_unreadable_file_is_found_at_first_touch_reported_once_and_replaced(tmp_path, caplog):
    root = _folder(tmp_path / "d", per_class=3)
    (root / "dark" / "dark_1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    index = index_image_folder(root, root)
    assert len(index.paths) == 6  # listed: the index opens nothing
    reference = ImageFileDataset(root, index.paths, index.labels, 3, 8, on_error="skip")
    plan = epoch_order(6, 2, 0, 0, shuffle=False)
    for workers in (0, 2):
        dataset = ImageFileDataset(root, index.paths, index.labels, 3, 8, on_error="skip")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="modelforge.data"):
            epochs = [list(iterate(dataset, plan, torch.utils.data.default_collate, workers)) for _ in range(2)]
        broken = [r for r in caplog.records if "dark_1.png: not a readable image" in r.getMessage()]
        assert len(broken) == 1, caplog.text  # once, whichever process and epoch met it
        assert "1 file(s) under" in caplog.text and dataset.skips.count == 1
        x, y = epochs[0][0]  # item 1 is item 2's pixels and label: the next readable one
        assert torch.equal(x[1], reference[2][0]) and y.tolist() == [0, 0]
        assert all(torch.equal(a[0], b[0]) for a, b in zip(epochs[0], epochs[1], strict=True))
    with pytest.raises(DataError, match="no readable images"):
        ImageFileDataset(root, index.paths[[1]], index.labels[[1]], 3, 8, on_error="skip")[0]


def test_a_file_that_fails_when_decoded_stops_with_one_line_also_from_a_worker(tmp_path):
    root = _folder(tmp_path / "d", per_class=2)
    whole = (root / "light" / "light_1.png").read_bytes()
    (root / "light" / "light_1.png").write_bytes(whole[: len(whole) // 2])  # the header survives, the pixels don't
    index = index_image_folder(root, root, on_error="fail")
    assert len(index.paths) == 4
    dataset = ImageFileDataset(root, index.paths, index.labels, 3, 8, on_error="fail")
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            list(iterate(dataset, epoch_order(4, 2, 0, 0, shuffle=False), torch.utils.data.default_collate, workers))
        assert "light_1.png: not a readable image" in str(info.value) and "\n" not in str(info.value)


def test_workers_give_the_same_batches_and_leave_the_global_rng_alone(tmp_path):
    root = _folder(tmp_path / "d")
    index = index_image_folder(root, root)
    dataset = ImageFileDataset(root, index.paths, index.labels, 3, 8)
    plan = epoch_order(len(dataset), 4, seed=3, epoch=1)
    before = torch.get_rng_state()
    main = list(iterate(dataset, plan, torch.utils.data.default_collate, 0))
    workers = list(iterate(dataset, plan, torch.utils.data.default_collate, 2))
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, workers, strict=True))


def test_default_workers_only_for_data_read_from_disk(tmp_path, monkeypatch):
    monkeypatch.setattr("modelforge.training.batches.usable_cpus", lambda: 16)
    lazy = ImageFileDataset(tmp_path, np.asarray([b"a.png"] * 1000), np.zeros(1000), 3, 8)
    assert default_workers(lazy, None) == 4 and default_workers(lazy, 1) == 1
    assert default_workers(lazy.subset(range(999)), None) == 0  # too few items to be worth starting workers
    assert default_workers(TensorDataset(torch.zeros(2000, 1)), None) == 0
    monkeypatch.setattr("modelforge.training.batches.usable_cpus", lambda: 3)
    assert default_workers(lazy, None) == 2
    monkeypatch.setattr("modelforge.training.batches.usable_cpus", lambda: 2)
    assert default_workers(lazy, None) == 0  # a worker would take a core the step computes on


def test_a_batch_read_at_once_equals_the_items_one_by_one(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "dark" / "dark_3.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    at_size = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(at_size).save(root / "light" / "light_4.png")  # a plain 8×8 PNG: OpenCV's fast path
    index = index_image_folder(root, root)
    dataset = ImageFileDataset(root, index.paths, index.labels, 3, 8, on_error="skip")
    assert torch.equal(dataset.__getitems__([9])[0][0], torch.from_numpy(at_size.transpose(2, 0, 1).copy()))
    picked = [9, 3, 0, 3]
    batch = dataset.__getitems__(picked)
    one_by_one = [dataset[i] for i in picked]
    assert all(torch.equal(a[0], b[0]) and a[1].dtype == b[1].dtype == torch.int64 and int(a[1]) == int(b[1])
               for a, b in zip(batch, one_by_one, strict=True))
    assert torch.equal(batch[1][0], dataset[4][0])  # the unreadable item's substitute: the next readable one
    plan = [torch.tensor(picked)]  # the training process reads a batch the same way when it decodes itself
    (x, y), = iterate(dataset, plan, torch.utils.data.default_collate, 0)
    assert torch.equal(x, torch.stack([b[0] for b in one_by_one])) and y.tolist() == [1, 0, 0, 0]


def test_synset_map_names_wordnet_folders(tmp_path):
    root = tmp_path / "imagenet"
    (root / "train").mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn02012849 crane\nn03126707 crane\nn01443537 goldfish, Carassius auratus\n")
    assert read_synset_names(root / "train", ["n01440764", "n02012849", "n03126707"]) == [
        "tench", "crane (n02012849)", "crane (n03126707)"]
    assert read_synset_names(tmp_path, ["a"]) is None
    with pytest.raises(DataError, match="no name for class folder"):
        read_synset_names(root, ["n09999999"])
    (root / "LOC_synset_mapping.txt").write_text("n01440764\n")
    with pytest.raises(DataError, match="LOC_synset_mapping.txt:1"):
        read_synset_names(root, ["n01440764"])


def test_imagenet_layout_trains_through_transfer_mobilenetv2(tmp_path):
    root = tmp_path / "imagenet"
    for split, count in (("train", 8), ("val", 3)):
        _folder(root / split, classes=("n01440764", "n01443537"), per_class=count, suffix="JPEG", size=24)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius\n")
    run = modelforge.train("transfer-mobilenetv2", [f"data.path={root}", "data.image_size=32", "train.max_steps=2",
                                                    "train.batch_size=8", "train.progress=off", "train.num_workers=1"],
                           run_dir=tmp_path / "run")
    found = run.summary["data"]["found"]
    assert "2 classes (tench " in found and ", goldfish " in found and "val 6 (imagenet/val)" in found
    # no test/ folder: the test split is a share of train/, as the README says
    assert "train 13 (imagenet/train)" in found and "test 3 (split off imagenet/train)" in found, found
    prediction = modelforge.load(run.directory).predict(str(root / "val" / "n01443537" / "n01443537_0.JPEG"))[0]
    assert prediction["label"] in {"tench", "goldfish"}


def test_pixel_baseline_decodes_at_most_max_train_rows_of_a_folder_read_from_disk(tmp_path, monkeypatch):
    from modelforge.tasks import baselines
    from modelforge.tasks.base import Splits

    root = _folder(tmp_path / "d", per_class=8)
    index = index_image_folder(root, root)
    dataset = ImageFileDataset(root, index.paths, index.labels, 1, 8)
    decoded = []
    real = lazy_images.decode_image
    monkeypatch.setattr(lazy_images, "decode_image", lambda path, *a: decoded.append(path) or real(path, *a))
    monkeypatch.setattr(baselines, "MAX_TRAIN", 6)

    class _Task:
        baseline, labels = "pixels", ["dark", "light"]

    result = baselines.run_baseline(_Task(), Splits(dataset, test=dataset.subset(range(16))))
    assert result["train_rows"] == 6 and len(decoded) == 12 and result["test_accuracy"] == 1.0


def test_pixel_baseline_decodes_fewer_rows_of_large_pictures(tmp_path):
    from modelforge.tasks import baselines

    root = _folder(tmp_path / "d", per_class=2)
    index = index_image_folder(root, root)
    small, large = (ImageFileDataset(root, index.paths, index.labels, 3, size) for size in (28, 224))
    assert baselines._rows_for("pixels", small) == baselines.MAX_TRAIN
    assert baselines._rows_for("pixels", large) == baselines.PIXEL_VALUES // (3 * 224 * 224)  # 1,328, not 20,000
    assert baselines._rows_for("text", large) == baselines.MAX_TRAIN
