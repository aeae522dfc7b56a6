"""The documented commands: `modelforge train image-classifier data.path=DATASET_OR_SHARDS` trains on a Hugging Face
save_to_disk folder and on WebDataset shards, `modelforge eval` scores the run again from the recorded data, and a
corrupt shard member with data.on_error=fail is one line and exit 2."""

import json
import tarfile

import pytest
import yaml
from image_records_data import add_member, encoded_images, write_saved_dataset, write_shards

TINY = ["data.image_size=8", "model.name=mlp", "model.hidden=[16]", "train.max_steps=3", "train.batch_size=8",
        "train.progress=off"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("kind", ["hf", "webdataset"])
def test_image_classifier_trains_and_evaluates_from_records(train_cli, cli, tmp_path, kind):
    items = encoded_images(60)
    if kind == "hf":
        path = write_saved_dataset(tmp_path / "saved", {"train": items[:48], "test": items[48:]})
    else:
        path = write_shards(tmp_path / "shards", items[:48], count=2, prefix="train")
        write_shards(path, items[48:], count=1, prefix="test")
    run = tmp_path / "run"
    result = train_cli("image-classifier", run, [f"data.path={path}", *TINY], files=("results.json", "model/task.json"))
    results = json.loads((run / "results.json").read_text())
    assert results["summary"]["steps"] == 3
    found = results["summary"]["data"]["found"]
    assert f"({kind}; " in found and "2 classes (dark 2" in found and "test 12 (" in found, found
    assert found in result.stdout
    saved = yaml.safe_load((run / "recipe.yaml").read_text())["data"]
    assert saved["format"] == kind and saved["test_size"] == 0.0  # the source's own test split, nothing held out
    assert json.loads((run / "model" / "task.json").read_text())["labels"] == ["dark", "light"]
    evaluated = cli("eval", str(run))
    assert evaluated.returncode == 0, evaluated.stderr
    assert "test_accuracy" in evaluated.stdout


def test_a_corrupt_member_with_on_error_fail_is_one_line_and_exit_2(cli, tmp_path):
    shards = write_shards(tmp_path / "shards", encoded_images(20), count=2)
    with tarfile.open(shards / "shard-001.tar", "a") as tar:
        add_member(tar, "broken.png", b"\x89PNG\r\n\x1a\nnot really")  # fails the header check while indexing
        add_member(tar, "broken.cls", b"dark")
    result = cli("train", "image-classifier", f"data.path={shards}", "data.on_error=fail", *TINY,
                 "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "shard-001.tar: broken.png: not a readable image" in lines[0], result.stderr
