"""scenes-clip trains for a few steps on tiny generated scenes through the real CLI (a tiny text tower trained with
LoRA, merged into the artifact); then zero-shot `predict --labels`, `search --text --images`, and the two-tower ONNX
export."""

import json
from pathlib import Path

TINY = ["data.scenes_train=24", "data.scenes_val=8", "data.scenes_test=8", "data.image_size=32",
        "data.tokenizer.kind=word", "data.init_text_encoder=null", "data.text_tower=train", "adapter.r=4",
        "model.dim=32", "model.num_layers=1",
        "model.num_heads=2", "model.mlp_hidden=64", "model.embed_dim=16", "model.image_widths=[8,16]",
        "train.max_steps=2", "train.batch_size=8", "train.progress=off"]


def _test_images() -> Path:
    from modelforge.data.cache import cache_dir

    return sorted(cache_dir("scenes-captions").glob("32px-*/test/images"))[0]


def test_scenes_clip_trains_predicts_zero_shot_searches_and_exports(cli, train_cli, tmp_path):
    run_dir = tmp_path / "clip"
    result = train_cli("scenes-clip", run_dir, TINY,
                       files=("model/model.safetensors", "model/tokenizer.json", "report.html",
                              "plots/sample_predictions.png"))
    assert "test_t2i_r@1:" in result.stdout and "test_mean_recall:" in result.stdout
    images = _test_images()
    picture = images / "000000.png"

    predicted = cli("predict", str(run_dir), str(picture), "--labels", "a 3", "a 7", "a red square")
    assert predicted.returncode == 0, predicted.stderr
    (out,) = json.loads(predicted.stdout)
    assert out["label"] in {"a 3", "a 7", "a red square"} and len(out["top"]) == 3
    assert abs(sum(t["probability"] for t in out["top"]) - 1) < 1e-3
    ensembled = cli("predict", str(run_dir), str(picture), "--labels", "3", "7", "--templates", "a {}", "a white {}")
    assert ensembled.returncode == 0, ensembled.stderr
    assert {t["label"] for t in json.loads(ensembled.stdout)[0]["top"]} == {"3", "7"}
    no_slot = cli("predict", str(run_dir), str(picture), "--labels", "3", "--templates", "a digit")
    assert no_slot.returncode == 2 and "hold {} once" in no_slot.stderr and len(no_slot.stderr.splitlines()) == 1

    searched = cli("search", str(run_dir), "--text", "a red square left of a 7", "--images", str(images), "--top", "3")
    assert searched.returncode == 0, searched.stderr
    ranked = json.loads(searched.stdout)
    assert [r["rank"] for r in ranked] == [1, 2, 3] and ranked[0]["score"] >= ranked[1]["score"] >= ranked[2]["score"]
    assert all(Path(r["image"]).parent == images for r in ranked)

    empty = tmp_path / "empty"
    empty.mkdir()
    refused = cli("search", str(run_dir), "--text", "a 7", "--images", str(empty))
    assert refused.returncode == 2 and "no image files" in refused.stderr and len(refused.stderr.splitlines()) == 1

    exported = cli("export", str(run_dir), "--output", str(tmp_path / "clip.onnx"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "clip.image_encoder.onnx").is_file() and (tmp_path / "clip.text_encoder.onnx").is_file()
    assert "verified: image tower checked" in exported.stdout
