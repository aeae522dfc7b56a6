"""The user's caption files read per item: the pixels equal the in-memory path's, batches are the same with and
without DataLoader workers for both image–text tasks, statistics decode a bounded sample, bad files behave as
before, and runs with 0 and 2 workers end with bit-identical weights."""

import logging

import numpy as np
import pytest
import torch
from captioning_data import caption_folder
from PIL import Image
from safetensors.torch import load_file

import modelforge
from modelforge.core.errors import DataError
from modelforge.data import caption_pixels as pixels_module
from modelforge.data.caption_pixels import FilePixels, HeldPixels, caption_pixels, stack_images
from modelforge.data.captions import CaptionedImages
from modelforge.data.formats.image_captions import read_captions
from modelforge.tasks.multimodal import captioning_data
from modelforge.tasks.recipes import load_recipe
from modelforge.training.batches import default_workers, epoch_order, iterate

CAPTIONER = ["data.image_size=16", "data.val_fraction=0.2", "data.test_fraction=0.2", "model.widths=[4,8]",
             "model.dim=16", "model.num_heads=2", "model.mlp_hidden=32", "model.num_decoder_layers=1",
             "data.decoding.beam_size=1"]
CLIP = ["data.image_size=16", "data.tokenizer.kind=word", "data.init_text_encoder=null", "data.text_tower=train",
        "model.dim=16", "model.num_layers=1", "model.num_heads=2", "model.mlp_hidden=32", "model.embed_dim=8",
        "model.image_widths=[4,8]", "data.val_fraction=0.2", "data.test_fraction=0.2"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared CPU: spinning threads only slow them down
    yield
    torch.set_num_threads(before)


def _mixed_pictures(root):
    """Pictures in the modes and formats a user's folder holds: RGB, grey, RGBA, palette, JPEG, already 16×16."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)
    pictures = {"rgb.png": Image.fromarray(rgb), "grey.png": Image.fromarray(rgb[..., 0]),
                "alpha.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
                "palette.png": Image.fromarray(rgb).convert("P"), "photo.jpg": Image.fromarray(rgb),
                "square.png": Image.fromarray(rgb[:16, :16])}
    rows = ["image,caption"]
    for name, picture in pictures.items():
        picture.save(root / name)
        rows += [f"{name},a {name.split('.')[0]} picture", f"{name},another"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


def _task(recipe, path, overrides):
    from modelforge.tasks import get_task

    loaded = load_recipe(recipe, [f"data.path={path}", *overrides])
    return get_task(loaded.task)(loaded)


def test_files_decode_per_item_to_the_in_memory_paths_pixels(tmp_path):
    data = read_captions(_mixed_pictures(tmp_path))
    store = caption_pixels(data, 16)
    assert isinstance(store, FilePixels) and store.loads_from_disk and len(store) == 6
    old = torch.from_numpy(data.image_batch(range(len(data)), 16))  # what the tasks held in memory before
    assert torch.equal(store.get(range(6)), old) and torch.equal(store.one(2), old[2])
    assert store.get([]).shape == (0, 3, 16, 16)
    held = caption_pixels(CaptionedImages([np.zeros((8, 8, 3), np.uint8)] * 2, [["a"], ["b"]], "gen"), 16)
    assert isinstance(held, HeldPixels) and not held.loads_from_disk and held.get([1, 0]).shape == (2, 3, 16, 16)
    for pixels in (store, held):  # one memory layout however a batch is gathered (from workers: stacked items)
        assert pixels.get([1, 0]).stride() == stack_images([pixels.one(1), pixels.one(0)]).stride() == old.stride()


def test_captioning_batches_are_the_same_from_workers_and_statistics_decode_a_sample(tmp_path, monkeypatch):
    csv = caption_folder(tmp_path)
    with csv.open("a") as rows:  # one image with a longer caption: a batch without it is trimmed to a shorter width
        rows.write("images/000.png,a red square on the right of the dark bar in the middle of the picture\n")
    task = _task("scenes-captioner", csv, [*CAPTIONER, "data.val_fraction=0", "data.test_fraction=0"])
    splits = task.datasets()
    train = splits.train
    assert train.loads_from_disk and default_workers(train, None) == 0  # small: no workers unless asked
    parts = task._load()  # the in-memory images of before: the statistics are the same figures
    old = torch.from_numpy(parts["train"].image_batch(range(len(parts["train"])), 16))
    assert task.state()["mean"] == captioning_data.channel_stats(old)[0]
    plan = epoch_order(len(train), 4, seed=1, epoch=0)
    main = list(iterate(train, plan, task.collate, 0))  # get_batch: index operations in this process
    assert len({batch["tgt"].shape[1] for batch in main}) == 2
    for a, b in zip(main, iterate(train, plan, task.collate, 2), strict=True):  # items collated in workers
        assert torch.equal(a["images"], b["images"]) and a["images"].stride() == b["images"].stride()
        assert torch.equal(a["tgt"], b["tgt"]) and torch.equal(a["owner"], b["owner"])
        assert a["references"] == b["references"] and b["split"] == "train"
    assert main[0]["owner"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # every caption of each image, as before
    assert main[0]["images"].dtype == torch.uint8 and main[0]["images"].shape[1:] == (3, 16, 16)
    decoded = []
    real = pixels_module.decode_image
    monkeypatch.setattr(pixels_module, "decode_image", lambda path, *a: decoded.append(path) or real(path, *a))
    monkeypatch.setattr(captioning_data, "STATISTICS_SAMPLE", 3)
    captioning_data.training_stats(train.store)
    assert len(decoded) == 3


def test_retrieval_batches_are_the_same_from_workers_and_report_and_evaluation_go_batch_by_batch(tmp_path):
    task = _task("scenes-clip", caption_folder(tmp_path), CLIP)
    splits = task.datasets()
    assert splits.train.loads_from_disk and splits.test.loads_from_disk
    plan = epoch_order(len(splits.train), 5, seed=2, epoch=1)
    for a, b in zip(iterate(splits.train, plan, task.collate, 0), iterate(splits.train, plan, task.collate, 2),
                    strict=True):
        assert len(a) == len(b) == 4 and all(torch.equal(x, y) and x.stride() == y.stride() for x, y in zip(a, b))
    torch.manual_seed(0)
    model = task.build_model().eval()
    report = task.report_samples(model, splits, count=2)
    assert report.png.startswith(b"\x89PNG") and "rank of its image" in report.html
    test = splits.test  # evaluation embeds the split batch by batch: the embeddings of one batch of it all
    whole = task.embed(model, [test.get_batch(range(len(test)))])
    batched = task.embed(model, iterate(test, epoch_order(len(test), 2, 0, 0, False), task.collate, 2))
    for a, b in zip(whole[:3], batched[:3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert "mean_recall" in task.evaluate(model, iterate(test, epoch_order(len(test), 2, 0, 0, False), task.collate))


def test_bad_files_are_skipped_at_indexing_and_a_body_that_fails_to_decode_stops_with_one_line(tmp_path, caplog):
    csv = caption_folder(tmp_path, count=10)
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    with csv.open("a") as rows:
        rows.write("images/broken.png,a broken picture\nimages/gone.png,a missing picture\n")
    with caplog.at_level(logging.WARNING, logger="modelforge.data"):
        splits = _task("scenes-captioner", csv, [*CAPTIONER, "data.val_fraction=0", "data.test_fraction=0"]).datasets()
    assert len(splits.train) == 10 and "2 entr(y/ies)" in caplog.text
    assert "gone.png: image file is missing" in caplog.text and "broken.png" in caplog.text
    whole = (tmp_path / "images" / "003.png").read_bytes()
    (tmp_path / "images" / "003.png").write_bytes(whole[: len(whole) // 2])  # the header survives, the pixels don't
    task = _task("scenes-clip", csv, [*CLIP, "data.val_fraction=0", "data.test_fraction=0"])
    train = task.datasets().train  # indexing reads headers only
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            list(iterate(train, epoch_order(len(train), 4, 0, 0, shuffle=False), task.collate, workers))
        assert "003.png: not a readable image" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="003.png: not a readable image"):  # the captioner meets it in its statistics
        _task("scenes-captioner", csv, [*CAPTIONER, "data.val_fraction=0", "data.test_fraction=0"]).datasets()


@pytest.mark.parametrize("recipe, overrides", [("scenes-captioner", CAPTIONER), ("scenes-clip", CLIP)])
def test_runs_with_and_without_workers_end_with_the_same_weights(tmp_path, recipe, overrides):
    csv = caption_folder(tmp_path / "data", count=12)
    weights = []
    for workers in (0, 2):
        run = modelforge.train(recipe, [f"data.path={csv}", *overrides, "train.max_steps=3", "train.batch_size=4",
                                        "train.progress=off", "train.warmup_steps=1", f"train.num_workers={workers}"],
                               run_dir=tmp_path / f"run{workers}")
        weights.append(load_file(run.directory / "model" / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
