"""The pretrained MobileNetV2 recipes through the real CLI: ImageNet predictions on real photos, and transfer
learning on a generated image folder with the feature blocks frozen."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from skimage import data

import modelforge
from modelforge.core.errors import ConfigError
from modelforge.core.registry import build

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}  # ImageNet's domestic cat classes


def test_imagenet_recipe_predicts_espresso_and_a_cat_with_top5(cli, tmp_path):
    run_dir = tmp_path / "imagenet"
    trained = cli("train", "imagenet-mobilenetv2", "--run-dir", str(run_dir))
    assert trained.returncode == 0, trained.stderr
    assert "steps: 0" in trained.stdout  # nothing to train: the pretrained weights are the model
    coffee, chelsea = tmp_path / "coffee.jpg", tmp_path / "chelsea.png"
    Image.fromarray(data.coffee()).save(coffee, quality=95)  # 400×600: resize + centre crop must handle non-square
    Image.fromarray(data.chelsea()).save(chelsea)

    predicted = cli("predict", str(run_dir), str(coffee), str(chelsea))
    assert predicted.returncode == 0, predicted.stderr
    cup, cat = json.loads(predicted.stdout)
    assert cup["label"] == "espresso" and cat["label"] in CATS
    for result in (cup, cat):
        assert len(result["top"]) == 5
        probabilities = [t["probability"] for t in result["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and 0.5 < probabilities[0] <= 1
    task = json.loads((run_dir / "model" / "task.json").read_text())
    assert len(task["labels"]) == 1000 and task["resize"] == 256 and task["image_size"] == 224
    assert task["mean"] == pytest.approx([0.485, 0.456, 0.406]) and task["std"] == pytest.approx([0.229, 0.224, 0.225])


def _shapes_folder(root, per_class=16, size=48):
    """Two classes of coloured shapes at random places and sizes: red discs and blue squares on noise."""
    rng = np.random.default_rng(0)
    for name, colour in (("disc", (220, 30, 30)), ("square", (30, 60, 220))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(90, 170, (size, size, 3), dtype=np.uint8))
            r = int(rng.integers(8, 16))
            x, y = (int(v) for v in rng.integers(r, size - r, 2))
            box = (x - r, y - r, x + r, y + r)
            draw = ImageDraw.Draw(image)
            draw.ellipse(box, fill=colour) if name == "disc" else draw.rectangle(box, fill=colour)
            image.save(root / name / f"{i:02d}.png")


def test_transfer_recipe_trains_only_the_head_on_an_image_folder(cli, tmp_path):
    folder, run_dir = tmp_path / "shapes", tmp_path / "transfer"
    _shapes_folder(folder)
    result = cli("train", "transfer-mobilenetv2", f"data.path={folder}", "data.image_size=32", "data.val_size=4",
                 "data.test_size=8", "train.max_steps=3", "train.batch_size=8", "train.progress=off",
                 "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "test_accuracy:" in result.stdout

    trained = load_file(str(run_dir / "model" / "model.safetensors"))
    pretrained = build("model", "mobilenet_v2", pretrained=True).state_dict()
    for name, value in pretrained.items():
        if name.startswith("features."):  # weights and BatchNorm statistics of every frozen block are untouched
            assert torch.equal(trained[name], value), name
    assert trained["classifier.1.weight"].shape == (2, 1280)

    predictor = modelforge.load(run_dir)
    out = predictor.predict([str(folder / "disc" / "00.png"), str(folder / "square" / "00.png")])
    assert [len(r["top"]) for r in out] == [2, 2] and {r["label"] for r in out} <= {"disc", "square"}


def test_trainable_blocks_freezes_all_but_the_last_blocks():
    model = build("model", "mobilenet_v2", width_mult=0.25, num_classes=3, trainable_blocks=2).train()
    trainable = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad and "features" in name}
    assert trainable == {"17", "18"}
    assert all(p.requires_grad for p in model.classifier.parameters())
    assert not model.features[0].training and model.features[17].training  # frozen BatchNorm stays in eval mode
    with pytest.raises(ConfigError, match="trainable_blocks must be 0..19"):
        build("model", "mobilenet_v2", width_mult=0.25, trainable_blocks=20)


def test_imagenet_recipe_scores_an_imagenet_layout_val_folder(cli, tmp_path):
    """val/<wnid>/ folders scored as the network's unit of their synset (the map's line order): the cat and the cup
    filed under the classes the network names them count as right, the cup filed under a cat class as wrong."""
    from modelforge.models.mobilenet import imagenet_classes

    names = imagenet_classes()
    root = tmp_path / "imagenet"
    (root / "LOC_synset_mapping.txt").parent.mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"n{i:08d} {name}\n" for i, name in enumerate(names)))
    for name, picture, file in (("Egyptian cat", data.chelsea(), "chelsea.png"), ("espresso", data.coffee(), "a.jpg"),
                                ("tabby", data.coffee(), "b.jpg")):
        folder = root / "val" / f"n{names.index(name):08d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / file)
    result = cli("train", "imagenet-mobilenetv2", f"data.path={root}", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "val (ImageNet layout" in result.stdout and "3 of the 1000 ImageNet classes" in result.stdout
    metrics = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
    assert metrics["test_accuracy"] == pytest.approx(2 / 3)

    (root / "LOC_synset_mapping.txt").unlink()  # three folders and no map: which units they are is unknown
    result = cli("train", "imagenet-mobilenetv2", f"data.path={root}", "--run-dir", str(tmp_path / "again"))
    assert result.returncode == 2 and "3 class folders and no LOC_synset_mapping.txt" in result.stderr
    assert not (tmp_path / "again").exists()
