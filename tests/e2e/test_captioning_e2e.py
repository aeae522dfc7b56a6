"""The scenes-captioner recipe trains a few steps on a tiny generated set through the CLI, reports BLEU-4/CIDEr beside
the nearest-caption baseline, and `modelforge caption` describes images (bad input: exit 2, one line)."""

import json

import pytest

TINY = ["data.num_train=24", "data.num_val=6", "data.num_test=6", "data.image_size=32", "train.max_steps=3",
        "train.batch_size=8", "train.progress=off", "train.warmup_steps=1", "data.decoding.beam_size=2",
        "model.widths=[8,16]", "model.dim=32", "model.num_heads=2", "model.mlp_hidden=64",
        "model.num_decoder_layers=1"]

pytestmark = pytest.mark.usefixtures("isolated_cache")


def test_scenes_captioner_trains_reports_the_baseline_and_captions(cli, train_cli, tmp_path, isolated_cache):
    run_dir = tmp_path / "captioner"
    result = train_cli("scenes-captioner", run_dir, TINY,
                       files=("results.json", "report.html", "model/model.safetensors", "model/tokenizer.json"))
    for metric in ("test_bleu4:", "test_cider:", "test_bleu4_greedy:"):
        assert metric in result.stdout, metric
    results = json.loads((run_dir / "results.json").read_text())
    baseline = results["summary"]["baseline"]
    assert baseline["method"] == "caption of the nearest training image by pixel distance"
    assert baseline["compared"] == ["test_cider", "test_bleu4"] and baseline["verdict"] in result.stdout
    report = (run_dir / "report.html").read_text()
    assert "<h2>Baseline</h2>" in report and "model caption" in report

    images = sorted(isolated_cache.glob("scenes-captions/*/test/images/*.png"))[:2]
    captioned = cli("caption", str(run_dir), *map(str, images), "--json", "--beam", "1")
    assert captioned.returncode == 0, captioned.stderr
    answers = json.loads(captioned.stdout)
    assert [a["input"] for a in answers] == [str(p) for p in images]
    assert all(isinstance(a["caption"], str) for a in answers)

    missing = cli("caption", str(run_dir), str(tmp_path / "nope.png"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "nope.png is not an image file" in missing.stderr
