"""``modelforge explain`` through the real CLI, and the recipe's ``explain:`` gallery written by ``train``.

The runs come from the session fixtures (recipes with small overrides, trained in-process to keep the suite fast);
the explanations themselves go through the ``modelforge`` command in a subprocess, as a user runs them."""

import json

import numpy as np
from PIL import Image

from modelforge.cli import main


def test_train_with_explain_section_writes_the_gallery_into_the_report(digits_run):
    run_dir = digits_run.directory
    index = json.loads((run_dir / "explanations" / "index.json").read_text())
    assert index["method"] == "integrated_gradients" and index["kind"] == "image" and len(index["items"]) == 4
    for item in index["items"]:
        assert (run_dir / "explanations" / item["png"]).is_file()
        assert np.load(run_dir / "explanations" / item["attributions"]).shape == (1, 16, 16)
        assert item["true"] in [str(i) for i in range(10)] and abs(item["convergence_delta"]) < 1
    assert (run_dir / "explanations" / "gallery.png").is_file()
    report = (run_dir / "report.html").read_text()
    assert "<h2>Explanations</h2>" in report and "integrated_gradients attributions" in report


def test_explain_an_image_writes_overlay_and_raw_attributions(cli, digits_run, tmp_path):
    image = tmp_path / "seven.png"
    canvas = np.zeros((16, 16), dtype=np.uint8)
    canvas[3:5, 4:12] = 255
    canvas[5:14, 9:11] = 255
    Image.fromarray(canvas).save(image)
    out = tmp_path / "out"
    result = cli("explain", str(digits_run.directory), str(image), "--method", "gradient_shap", "--target", "7",
                 "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "gradient_shap for '7'" in result.stdout
    overlay = Image.open(out / "01-seven.png")
    assert overlay.size == (224, 224)  # 16 px × 14
    raw = np.load(out / "01-seven.npy")
    assert raw.shape == (1, 16, 16) and np.abs(raw).sum() > 0


def test_explain_text_prints_colour_and_writes_html_and_attention(cli, text_run, tmp_path):
    out = tmp_path / "text"
    result = cli("explain", str(text_run.directory), "a really wonderful story", "--color", "always",
                 "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert "\x1b[48;2;" in result.stdout and "wonderful" in result.stdout
    html = (out / "01-text.html").read_text()
    assert html.count('class="mf-token"') == 4
    grid = Image.open(out / "01-text-attention.png")  # 1 layer × 2 heads
    assert grid.format == "PNG" and grid.size[0] > grid.size[1]


def test_bad_method_is_a_one_line_usage_error(cli, digits_run):
    result = cli("explain", str(digits_run.directory), "x.png", "--method", "lime")
    assert result.returncode == 2 and "invalid choice: 'lime'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_target_and_missing_input_are_one_line_errors(digits_run, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(image)
    assert main(["explain", str(digits_run.directory), str(image), "--target", "eleven"]) == 2
    err = capsys.readouterr().err
    assert "unknown label 'eleven'" in err and len(err.strip().splitlines()) == 1
    assert main(["explain", str(digits_run.directory)]) == 2
    assert "give at least one INPUT" in capsys.readouterr().err
