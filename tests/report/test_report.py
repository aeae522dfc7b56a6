import base64
import json
import re

import pytest

from modelforge.core.errors import ArtifactError
from modelforge.report import compare_runs, read_run, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short digits-cnn runs that cross an epoch end, so both have validation evaluations."""
    import modelforge

    root = tmp_path_factory.mktemp("report")
    common = ["train.max_steps=45", "train.progress=off", "train.log_every_steps=10"]
    first = modelforge.train("digits-cnn", common, run_dir=root / "adam")
    second = modelforge.train("digits-cnn", [*common, "train.lr=0.0005"], run_dir=root / "slow-lr")
    return first, second


def embedded_pngs(page: str) -> dict[str, bytes]:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">', page)
    return {alt: base64.b64decode(data) for data, alt in found}


def test_report_is_self_contained_with_curves_metrics_confusion_and_samples(runs):
    run = runs[0]
    path = write_report(run.directory)
    assert path == run.directory / "report.html"
    page = path.read_text()
    for heading in ("Overview", "Final metrics", "Data", "Training curves", "Test confusion matrix",
                    "Sample predictions", "Recipe"):
        assert f"<h2>{heading}</h2>" in page
    images = embedded_pngs(page)
    assert {"loss", "validation metrics", "learning rate", "test_confusion_matrix", "sample predictions"} <= set(images)
    assert all(png.startswith(PNG_SIGNATURE) for png in images.values())
    # nothing loaded from elsewhere: no scripts, stylesheets or remote images
    assert "<script" not in page and "<link" not in page and not re.search(r'src="(?!data:)', page)

    assert f"{run.metrics['test_accuracy']:.4g}" in page  # the final test accuracy, as results.json has it
    assert ">train_size</th><td class=\"num\">1294<" in page  # the data summary
    assert "name: digits-cnn" in page  # the recipe
    assert {p.name for p in (run.directory / "plots").iterdir()} >= {"loss.png", "test_confusion_matrix.png",
                                                                      "sample_predictions.png"}


def test_report_of_an_unfinished_run_and_escaping(tmp_path):
    """Only recipe.yaml and metrics.jsonl (the run is still training): the report says so; text is escaped."""
    run_dir = tmp_path / "running"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("name: demo\ndescription: '<script>alert(1)</script>'\ntask: x\n")
    records = [{"event": "train", "step": s, "epoch": 0, "loss": 2.0 / s, "lr": 0.1} for s in range(1, 6)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    page = write_report(run_dir).read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "results.json missing" in page and "no model to predict with" in page
    assert "loss" in embedded_pngs(page)


def test_not_a_run_directory(tmp_path, capsys):
    from modelforge.cli import main

    with pytest.raises(ArtifactError, match="not a run directory"):
        read_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_compare_prints_a_table_and_writes_overlaid_curves(runs, tmp_path, capsys):
    from modelforge.cli import main

    first, second = runs
    comparison = compare_runs([first.directory, second.directory], output=tmp_path / "cmp.png")
    assert comparison.columns[:4] == ["run", "recipe", "steps", "test_accuracy"]
    assert [row[0] for row in comparison.rows] == ["adam", "slow-lr"]
    assert comparison.rows[0][3] == pytest.approx(first.metrics["test_accuracy"])
    assert comparison.plot.read_bytes().startswith(PNG_SIGNATURE)

    target = tmp_path / "cli.png"
    assert main(["compare", str(first.directory), str(second.directory), "--output", str(target)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["run", "recipe", "steps", "test_accuracy"]
    assert lines[2].startswith("adam") and lines[3].startswith("slow-lr")
    assert f"{second.metrics['test_accuracy']:.4g}" in lines[3]
    assert f"curves: {target}" in out and target.exists()


def test_sample_predictions_reuse_the_training_splits(runs, monkeypatch):
    """With the splits training already holds (as api.train can pass them), the data is not loaded again."""
    from modelforge.report import _sample_predictions
    from modelforge.tasks.recipes import load_recipe
    from modelforge.tasks.vision.image_classification import ImageClassification

    splits = ImageClassification(load_recipe("digits-cnn")).datasets()
    monkeypatch.setattr(ImageClassification, "datasets", lambda self: pytest.fail("datasets() called again"))
    view = _sample_predictions(runs[0].directory, 4, splits)
    assert view.png.startswith(PNG_SIGNATURE) and view.note == "" and view.html is None
    none = _sample_predictions(runs[0].directory, 0, splits)
    assert none.png is None and none.note == "sample predictions were not asked for"


def test_report_cli(tmp_path, capsys):
    from modelforge.cli import main

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"event": "train", "step": 1, "loss": 1.0}) + "\n")
    target = tmp_path / "out" / "r.html"
    assert main(["report", str(run_dir), "--output", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    assert "loss" in embedded_pngs(target.read_text())
