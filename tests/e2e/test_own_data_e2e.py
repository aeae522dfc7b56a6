"""Your own data through the CLI: each documented command trains on a small real file made here."""

import html
import json

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_cli_trains_on_the_users_table_when_data_source_is_omitted(train_cli, tmp_path):
    table = tmp_path / "notes.csv"
    # distinct rows: the test share is held out by hash of the text, so copies of one row never straddle splits
    rows = [(f"the parcel arrived broken and late order {i}", "complaint") for i in range(20)]
    rows += [(f"thank you the service was great order {i}", "praise") for i in range(20)]
    table.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    run_dir = tmp_path / "run"
    train_cli("sentiment-lstm", run_dir, [f"data.path={table}", "train.max_steps=2", "train.progress=off"])
    assert json.loads((run_dir / "model" / "task.json").read_text())["labels"] == ["complaint", "praise"]
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["source"] == "file"


# ---- one small real file per documented command (README "Your own data") --------------------------------------
SENTENCES = {
    "complaint": ["the parcel arrived broken and two weeks late", "nobody answered my calls about the refund",
                  "the screen cracked on the first day", "support closed my ticket without reading it"],
    "praise": ["the courier was friendly and early", "setup took two minutes and it just works",
               "the refund came back the same afternoon", "great value and the battery lasts for days"],
}


def _table(tmp_path, name="notes.csv", repeat=4):
    rows = [(text, label) for label, texts in SENTENCES.items() for text in texts] * repeat
    path = tmp_path / name
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


def _images(root, count=6, size=24):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, value in (("dark", 40), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(value + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def _coco(root):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = np.full((48, 64, 3), 40, dtype=np.uint8)
        x, y = int(rng.integers(0, 40)), int(rng.integers(0, 28))
        pixels[y : y + 16, x : x + 20] = 220
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, 20, 16], "area": 320})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "box"}]}
    (root / "instances.json").write_text(json.dumps(coco))
    return root / "instances.json"


def _masks(root):
    from modelforge.data.formats.segmentation_folder import write_segmentation_folder

    rng = np.random.default_rng(1)
    images, masks = [], []
    for _ in range(10):
        mask = np.zeros((24, 32), dtype=np.uint8)
        y, x = int(rng.integers(0, 16)), int(rng.integers(0, 24))
        mask[y : y + 8, x : x + 8] = 1
        images.append((mask * 180 + 30 + rng.integers(0, 20, mask.shape)).astype(np.uint8))
        masks.append(mask)
    write_segmentation_folder(root, images, masks, class_names=["background", "spot"])
    return root


def _wavs(root, texts=("yes", "no", "stop")):
    from modelforge.data.audio import write_wav

    root.mkdir(parents=True)
    lines = []
    for i in range(15):
        text = texts[i % len(texts)]
        seconds, pitch = 0.3 + 0.05 * len(text), 300 + 60 * texts.index(text)
        t = np.arange(int(16000 * seconds)) / 16000
        write_wav(root / f"{i}.wav", (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), 16000)
        lines.append(f"{i}.wav\t{text}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return root


def _pairs(tmp_path):
    words = ["red house", "blue sky", "big dog", "small cat", "green tree"]
    spanish = ["casa roja", "cielo azul", "perro grande", "gato pequeño", "árbol verde"]
    lines = [f"the {words[i % 5]} number {i}\tel {spanish[i % 5]} número {i}" for i in range(40)]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _pairs_jsonl(tmp_path):
    rows = [(line.split("\t")) for line in _pairs(tmp_path).read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"en": en, "es": es}) + "\n" for en, es in rows), encoding="utf-8")
    return path


def _pairs_sgm(tmp_path):
    """WMT's test-set layout: ``news-src.en.sgm`` + ``news-ref.es.sgm``, segments paired by document and id (the
    reference lists its documents and segments in another order)."""
    rows = [line.split("\t") for line in _pairs(tmp_path).read_text(encoding="utf-8").splitlines()]
    docs = {f"d{d}": list(enumerate(rows[d * 10 : d * 10 + 10], start=1)) for d in range(4)}

    def write(path, side, order):
        body = "".join(f'<doc docid="{doc}">\n' + "".join(f'<seg id="{i}">{pair[side]}</seg>\n'
                                                          for i, pair in order(docs[doc])) + "</doc>\n"
                       for doc in order(list(docs)))
        path.write_text(f'<srcset setid="news" srclang="en">\n{body}</srcset>\n', encoding="utf-8")

    write(tmp_path / "news-src.en.sgm", 0, list)
    write(tmp_path / "news-ref.es.sgm", 1, lambda items: list(reversed(items)))
    return tmp_path / "news"


def _prose(tmp_path):
    text = " ".join(t for texts in SENTENCES.values() for t in texts) + ".\n"
    path = tmp_path / "notes.txt"
    path.write_text((text * 40), encoding="utf-8")
    return path


def _clips(root):
    from modelforge.data.builtin.moving_digits import ClipParams, render_clip
    from modelforge.data.formats.video import write_video

    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 8:20] = 255
    for name, motion in (("right", 2), ("still", 9)):
        for i in range(4):
            write_video(root / name / f"clip_{i}.mkv", render_clip(np.random.default_rng(i), digit, motion,
                                                                   ClipParams(frames=8, size=32)))
    return root


def _captioned(root, count=30, size=24):
    """A folder of images with captions.csv: two rows per image (several captions per image, as the README says)."""
    from PIL import Image

    root.mkdir(parents=True)
    rng, rows = np.random.default_rng(0), ["image,caption"]
    for i in range(count):
        shade = ("dark", 40) if i % 2 else ("light", 200)
        pixels = np.clip(shade[1] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.png")
        rows += [f"{i}.png,a {shade[0]} square", f"{i}.png,one {shade[0]} picture"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


TINY = ["train.max_steps=2", "train.progress=off", "train.batch_size=4"]
# recipe → (builds the user's data and returns the documented arguments, tiny-run overrides)
COMMANDS = {
    "text-classifier": (lambda p: [f"data.path={_table(p)}", f"data.test_path={_table(p, 'test.csv', 1)}"],
                        ["data.max_length=16"]),
    "image-classifier": (lambda p: [f"data.path={_images(p / 'photos')}"], ["data.image_size=16"]),
    "detector": (lambda p: [f"data.annotations={_coco(p)}"], ["data.image_size=32", "data.val_size=1",
                                                             "data.test_size=1"]),
    "segmenter": (lambda p: [f"data.path={_masks(p / 'scans')}"], ["data.image_size=16"]),
    "audio-classifier": (lambda p: [f"data.path={_wavs(p / 'sounds')}"],
                         ["model.channels=[4,4]", "model.strides=[1,2]"]),
    "speech-recognizer": (lambda p: [f"data.path={_wavs(p / 'speech')}"], ["model.hidden_size=8"]),
    "translator": (lambda p: [f"data.path={_pairs(p)}"], ["data.tokenizer.vocab_size=300", "model.dim=16",
                                                         "model.mlp_hidden=32", "model.num_heads=2"]),
    "translator jsonl": (lambda p: [f"data.path={_pairs_jsonl(p)}"], ["data.tokenizer.vocab_size=300", "model.dim=16",
                                                                    "model.mlp_hidden=32", "model.num_heads=2"]),
    "translator sgm": (lambda p: [f"data.path={_pairs_sgm(p)}", "data.source_lang=en", "data.target_lang=es"],
                       ["data.tokenizer.vocab_size=300", "model.dim=16", "model.mlp_hidden=32", "model.num_heads=2"]),
    "summarizer": (lambda p: [f"data.path={_pairs(p)}"], ["data.tokenizer.vocab_size=300", "model.dim=16",
                                                         "model.mlp_hidden=32", "model.num_heads=2"]),
    "language-model": (lambda p: [f"data.path={_prose(p)}"], ["data.tokenizer.vocab_size=300", "data.block_size=16",
                                                             "model.dim=16", "model.num_layers=1"]),
    "word-vectors": (lambda p: [f"data.path={_prose(p)}"], ["data.min_count=1", "model.dim=8"]),
    "video-classifier": (lambda p: [f"data.path={_clips(p / 'clips')}"], ["data.image_size=16", "data.num_frames=4",
                                                                         "data.val_size=1", "data.test_size=2"]),
    "scenes-clip": (lambda p: [f"data.path={_captioned(p / 'photos')}"],
                    ["data.image_size=16", "data.tokenizer.kind=word", "data.init_text_encoder=null",
                     "data.text_tower=train", "model.dim=16", "model.num_layers=1", "model.num_heads=2",
                     "model.mlp_hidden=32", "model.embed_dim=8", "model.image_widths=[4,8]"]),
    "scenes-captioner": (lambda p: [f"data.path={_captioned(p / 'photos')}"],
                         ["data.image_size=16", "model.widths=[4,8]", "model.dim=16", "model.num_heads=2",
                          "model.mlp_hidden=32", "model.num_decoder_layers=1", "data.decoding.beam_size=2"]),
}


# what each found line must say about the files made above
FOUND = {
    "text-classifier": "label column 'label'): 2 classes (complaint ",
    "image-classifier": " (one folder per class): 2 classes (",
    "audio-classifier": " WAV files listed): 3 classes (",
    "detector": "instances.json (COCO): 1 class, 6 training objects · train 6 (instances.json); ",
    "segmenter": " (images with masks): 2 classes (background, ",
    "speech-recognizer": " WAV files listed): ",
    "translator": "pairs.tsv: 40 pairs · train ",
    "translator jsonl": "pairs.jsonl: 40 pairs · train ",
    "translator sgm": "news-src.en.sgm + news-ref.es.sgm: 40 pairs · train ",
    "summarizer": "pairs.tsv: 40 pairs · train ",
    "language-model": "notes.txt: ",
    "word-vectors": "notes.txt: vocabulary ",
    "video-classifier": "clips (one folder per class): 2 classes (right ",
    "scenes-clip": "60 captions of 30 images in photos/captions.csv: train 24 (photos/captions.csv); val 3 (split off ",
    "scenes-captioner": "60 captions of 30 images in photos: train ",
}


@pytest.mark.parametrize("recipe", list(COMMANDS))
def test_documented_own_data_command_trains_on_a_small_real_file(train_cli, tmp_path, recipe):
    build, tiny = COMMANDS[recipe]
    (tmp_path / "data").mkdir()
    arguments = build(tmp_path / "data")
    run_dir = tmp_path / "run"
    result = train_cli(recipe.split()[0], run_dir, [*arguments, *TINY, *tiny],
                       files=("results.json", "model/task.json"))
    saved = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    for argument in arguments:  # the run read exactly the files named
        key, value = argument.split("=", 1)
        assert saved["data"][key.split(".")[1]] == value
    results = json.loads((run_dir / "results.json").read_text())
    assert results["summary"]["steps"] == 2 and results["summary"]["data"]
    found = results["summary"]["data"]["found"]  # every run on the user's files states what it found
    assert found.startswith("found ") and found in result.stdout
    assert html.escape(found) in (run_dir / "report.html").read_text()
    assert FOUND[recipe] in found, found
    if recipe in ("text-classifier", "image-classifier", "audio-classifier"):  # the baseline stands beside the model
        baseline = results["summary"]["baseline"]
        assert 0 <= baseline["test_accuracy"] <= 1 and baseline["verdict"] in result.stdout
        assert f"baseline ({baseline['method']}): test_accuracy: {baseline['test_accuracy']:.4f}" in result.stdout
        report = (run_dir / "report.html").read_text()
        assert "<h2>Baseline</h2>" in report and html.escape(baseline["verdict"]) in report


def test_image_folder_with_a_test_folder_records_no_unused_test_size(train_cli, tmp_path):
    root = tmp_path / "photos"
    _images(root / "train")
    _images(root / "test", count=2)
    run_dir = tmp_path / "run"
    result = train_cli("image-classifier", run_dir, [f"data.path={root}", *TINY, "data.image_size=16"])
    assert "found " + str(root) + " (one folder per class): 2 classes (dark 6, light 5) · train 11 (photos/train); " \
           "val 1 (split off photos/train); test 4 (photos/test)" in result.stdout
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["test_size"] == 0
