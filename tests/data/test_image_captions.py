"""Image–caption data: the generated scenes-captions set, the caption file formats, and the caption tokenizers."""

import json

import numpy as np
import pytest
from PIL import Image

from modelforge.core.errors import DataError
from modelforge.data.builtin import scenes as glyph_sources_module
from modelforge.data.builtin.caption_scenes import (
    COLOURS,
    KINDS,
    CaptionSceneParams,
    caption_scenes,
    caption_scenes_dir,
    held_out,
    lone_glyph_scene,
)
from modelforge.data.builtin.mnist import load_mnist
from modelforge.data.caption_text import (
    build_caption_vocabulary,
    decode_caption,
    encode_captions,
    encode_for_encoder,
    minilm_caption_tokenizer,
)
from modelforge.data.captions import CaptionedImages, split_captioned
from modelforge.data.formats.image_captions import read_caption_splits, read_captions

PARAMS = CaptionSceneParams(num_train=40, num_val=6, num_test=12, seed=5)


@pytest.fixture(scope="module")
def small_mnist():
    return {k: v[:400] for k, v in load_mnist().items()}


@pytest.fixture
def cache(tmp_path, monkeypatch, small_mnist):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(glyph_sources_module, "load_mnist", lambda: small_mnist)  # mnist_glyph_sources reads it
    return tmp_path


def _rows(root, split):
    return [json.loads(line) for line in (root / split / "captions.jsonl").read_text().splitlines()]


def _words(rows):
    return {word for row in rows for word in row["caption"].split()}


def test_generated_scenes_hold_out_colour_kind_pairs_for_test(cache):
    root = caption_scenes_dir(PARAMS)
    assert sum(held_out(k, c) for k in KINDS for c in COLOURS) == len(KINDS)  # one held-out colour per kind
    for split in ("train", "val"):
        drawn = {(o["kind"], o["colour"]) for row in _rows(root, split) for o in row["objects"]}
        assert not any(held_out(*pair) for pair in drawn), f"{split} draws a held-out pair"
    test_rows = _rows(root, "test")
    for image in {row["image"] for row in test_rows}:
        captions = [row["caption"] for row in test_rows if row["image"] == image]
        named = any(f"{c} {k}" in caption for caption in captions for k in KINDS for c in COLOURS if held_out(k, c))
        assert named, f"test image {image} names no unseen pair: {captions}"
    vocabulary = {"a", "an", "two", "to", "the", "of", "left", "right", "above", "below", *COLOURS, *KINDS}
    vocabulary |= {f"{kind}s" for kind in KINDS}
    assert _words(test_rows) <= vocabulary and _words(_rows(root, "train")) <= vocabulary


def test_generated_captions_describe_the_drawn_layout(cache):
    root = caption_scenes_dir(PARAMS)
    for row in _rows(root, "train"):
        objects = row["objects"]
        if len(objects) != 2 or not row["caption"].startswith(f"a {objects[0]['colour']} {objects[0]['kind']} "):
            continue  # the first caption of a pair scene: "a <colour A> <kind A> <relation> a <colour B> <kind B>"
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = objects[0]["box"], objects[1]["box"]
        dx, dy = (ax0 + ax1 - bx0 - bx1) / 2, (ay0 + ay1 - by0 - by1) / 2
        expected = ("left of" if dx < 0 else "right of") if abs(dx) > abs(dy) else ("above" if dy < 0 else "below")
        assert expected in row["caption"], (row["caption"], objects)
        image = np.asarray(Image.open(root / "train" / row["image"]))
        x0, y0, x1, y1 = objects[0]["box"]
        ink = image[y0:y1, x0:x1].astype(int)
        colour = np.asarray(COLOURS[objects[0]["colour"]])
        assert np.abs(ink - colour).sum(axis=2).min() < 60, "the named colour is drawn in the object's box"


def test_generated_set_is_deterministic_and_loads_in_memory(cache, monkeypatch):
    first = caption_scenes(PARAMS)
    assert [len(first[s]) for s in ("train", "val", "test")] == [40, 6, 12]
    assert first["train"].images[0].shape == (64, 64, 3) and first["train"].images[0].dtype == np.uint8
    assert all(len(caps) >= 3 for caps in first["test"].captions) and "unseen" in first["test"].origin
    monkeypatch.setenv("MODELFORGE_CACHE", str(cache / "other"))
    again = caption_scenes(PARAMS)
    assert again["test"].captions == first["test"].captions
    assert all(np.array_equal(a, b) for a, b in zip(again["test"].images, first["test"].images))
    other = caption_scenes(PARAMS, seed=6)
    assert other["train"].captions != first["train"].captions


def test_lone_object_scenes_name_exactly_the_object_drawn_and_stay_out_of_test(cache):
    with_lone = CaptionSceneParams(num_train=40, num_val=6, num_test=12, seed=5, single_share=0.5)
    root = caption_scenes_dir(with_lone)
    lone = [row for row in _rows(root, "train") if len(row["objects"]) == 1]
    assert 20 <= len(lone) <= 60  # about half of the 40 training scenes, two captions each
    for row in lone:
        (obj,) = row["objects"]
        assert row["caption"] in (f"a {obj['colour']} {obj['kind']}", f"{'an' if obj['kind'] == '8' else 'a'} "
                                                                        f"{obj['kind']}"), row
        assert not held_out(obj["kind"], obj["colour"])
        image = np.asarray(Image.open(root / "train" / row["image"])).astype(int)
        x0, y0, x1, y1 = obj["box"]
        outside = np.ones(image.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        colour = np.asarray(COLOURS[obj["colour"]])
        assert np.abs(image[y0:y1, x0:x1] - colour).sum(axis=2).min() < 60, "the named colour is in its box"
        assert np.abs(image[outside] - colour).sum(axis=1).min() > 60, "nothing of that colour outside its box"
    assert all(len(row["objects"]) >= 2 for row in _rows(root, "test"))
    # the test split is drawn as it is without lone objects: its recall compares across both kinds of run
    assert _rows(root, "test") == _rows(caption_scenes_dir(PARAMS), "test")


def test_a_lone_glyph_is_drawn_white_on_a_scene_background_at_scene_size(small_mnist):
    glyph = small_mnist["test_images"][0]
    image = lone_glyph_scene(np.random.default_rng(0), glyph, CaptionSceneParams(image_size=64)).astype(int)
    ink = np.argwhere(np.abs(image - 245).sum(axis=2) < 40)
    extent = (ink.max(axis=0) - ink.min(axis=0) + 1).max()
    assert 0.2 * 64 <= extent <= 0.38 * 64, extent  # the glyph's longer side spans the scenes' object sizes
    background = np.abs(image - 245).sum(axis=2) > 300
    assert background.mean() > 0.7 and 10 < image[background].mean() < 90  # the scenes' dark grey


def _image(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), colour).save(path)


def test_csv_groups_several_captions_per_image_and_reads_images_lazily(tmp_path):
    _image(tmp_path / "imgs" / "a.png")
    _image(tmp_path / "imgs" / "b.jpg", (0, 0, 250))
    (tmp_path / "captions.csv").write_text(
        'image,caption\nimgs/a.png,a red patch\nimgs/b.jpg,"blue, all blue"\nimgs/a.png,  red  again \n')
    data = read_captions(tmp_path)
    assert data.names == ["imgs/a.png", "imgs/b.jpg"]
    assert data.captions == [["a red patch", "red again"], ["blue, all blue"]]
    assert data.pairs() == [(0, "a red patch"), (0, "red again"), (1, "blue, all blue")]
    assert data.image(1, size=8).shape == (8, 8, 3) and data.image(1)[0, 0, 2] > 200
    assert data.image_batch([0, 1], 8).shape == (2, 3, 8, 8)


def test_missing_or_broken_images_and_empty_captions_are_counted_or_fail(tmp_path, caplog):
    _image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"image": "a.png", "caption": "fine"}, {"image": "gone.png", "caption": "x"},
        {"image": "broken.png", "caption": "y"}, {"image": "a.png", "caption": "  "}]))
    data = read_captions(tmp_path / "captions.jsonl")
    assert data.captions == [["fine"]]
    assert "3 entr(y/ies)" in caplog.text and "gone.png" in caplog.text
    with pytest.raises(DataError, match=r"gone\.png: image file is missing \(.*line 2\)"):
        read_captions(tmp_path / "captions.jsonl", on_error="fail")


@pytest.mark.parametrize("content, message", [
    ("picture,caption\na.png,x\n", r"no column 'image'"),
    ("image,caption\n", r"header but no data rows"),
])
def test_bad_caption_tables_are_one_line_errors(tmp_path, content, message):
    (tmp_path / "captions.csv").write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_captions(tmp_path / "captions.csv")
    assert "\n" not in str(info.value) and "captions.csv" in str(info.value)


def test_coco_captions_layout_with_an_images_folder(tmp_path):
    _image(tmp_path / "images" / "1.jpg")
    _image(tmp_path / "images" / "2.jpg")
    coco = {"images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
            "annotations": [{"image_id": 2, "caption": "second"}, {"image_id": 1, "caption": "first"},
                            {"image_id": 2, "caption": "second again"}]}
    (tmp_path / "captions_train2017.json").write_text(json.dumps(coco))
    data = read_captions(tmp_path)
    assert dict(zip(data.names, data.captions)) == {"2.jpg": ["second", "second again"], "1.jpg": ["first"]}
    coco["annotations"].append({"image_id": 9, "caption": "orphan"})
    (tmp_path / "captions_train2017.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"annotation 3: image_id 9 is not in the file's images list"):
        read_captions(tmp_path)
    (tmp_path / "captions_train2017.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_captions(tmp_path)
    (tmp_path / "captions_train2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="missing the 'annotations' list"):
        read_captions(tmp_path)


def test_split_folders_and_hash_splits_keep_an_images_captions_together(tmp_path):
    for split in ("train", "test"):
        _image(tmp_path / split / "a.png")
        (tmp_path / split / "captions.csv").write_text(f"image,caption\na.png,{split} one\na.png,{split} two\n")
    splits = read_caption_splits(tmp_path)
    assert set(splits) == {"train", "test"} and splits["test"].origin == f"{tmp_path.name}/test"
    assert read_caption_splits(tmp_path / "train" / "captions.csv").keys() == {"all"}
    with pytest.raises(DataError, match="no captions file"):
        read_captions(tmp_path)
    data = CaptionedImages([np.zeros((4, 4, 3), np.uint8)] * 50, [[f"c{i}", f"d{i}"] for i in range(50)], "gen")
    parts = split_captioned(data, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0, base="gen")
    assert sum(len(p) for p in parts.values()) == 50 and parts["val"].origin == "split off gen by hash"
    assert all(caps[0][1:] == caps[1][1:] for p in parts.values() for caps in p.captions)


def test_caption_vocabulary_round_trip_and_minilm_encoding():
    tok = build_caption_vocabulary(["A red square left of a 7", "two circles above a blue 3"])
    assert [tok.id_to_token(i) for i in range(4)] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    ids, lengths = encode_captions(tok, ["a red square", "a purple 7 above"], max_length=5)
    assert ids.shape == (2, 5) and lengths.tolist() == [5, 5] and ids[0, 0] == 2 and ids[0, 4] == 3
    assert decode_caption(tok, ids[0].tolist()) == "a red square"
    assert decode_caption(tok, ids[1].tolist()) == "a 7"  # cut to 3 words; "purple" is [UNK], a special token
    with pytest.raises(DataError):
        build_caption_vocabulary(["  "])
    mini = minilm_caption_tokenizer()
    ids, lengths = encode_for_encoder(mini, ["a red square", "two circles above a blue 3"], max_length=16)
    assert ids[0, 0] == mini.token_to_id("[CLS]") and lengths.tolist() == [5, 8]
