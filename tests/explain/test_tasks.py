"""Explanations per task kind without training: RNN text classifiers, audio spectrograms, unsupported tasks, the
recipe's explain: section, and the pictures."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from modelforge.core.errors import ConfigError
from modelforge.explain import explain, explain_batch, render
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe


def complete(item, floor: float = 0.5) -> bool:
    """Completeness within 1 % of f(x) − f(baseline); an untrained model's difference can be near 0, so 1 % of at
    least ``floor`` (a tenth of its logit scale) is allowed."""
    return abs(item.convergence_delta) <= 0.01 * max(abs(item.score_difference), floor)


def test_rnn_text_classifier_attributes_at_its_embedding(reviews_file):
    recipe = load_recipe("sentiment-lstm", ["data.source=file", f"data.path={reviews_file}", "model.embed_dim=8",
                                            "model.hidden_size=8"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    torch.manual_seed(0)
    model = task.build_model().eval()  # the recipe's dropout 0.5 would make the direct check below random
    found = explain(task, model, ["the film was fun", "dull"], steps=128)
    assert [item.view for item in found] == [["the", "film", "was", "fun"], ["dull"]]
    assert all(complete(item) for item in found)
    occluded = explain(task, model, ["the film was fun"], "occlusion")[0]
    with torch.no_grad():  # occluding one token = the logit drop when that token becomes [PAD]
        ids, lengths = task.preprocess(["the film was fun"])
        target = task.labels.index(occluded.target)
        full = model(ids, lengths)[0, target]
        ids[0, 3] = task.state()["pad_id"]
        assert occluded.attributions[3] == pytest.approx(float(full - model(ids, lengths)[0, target]), abs=1e-5)


def test_audio_attribution_covers_the_spectrogram():
    recipe = load_recipe("keyword-spotting", ["model.channels=[8, 8, 8, 8]"])
    task = get_task(recipe.task)(recipe, state={"labels": ["off", "on", "stop"], "n_features": 40})
    torch.manual_seed(0)
    model = task.build_model().eval()
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (t > 0.4)).astype(np.float32)  # silence, then a tone
    (item,) = explain(task, model, [wave], steps=64)
    frames = item.view.shape[0]
    assert item.kind == "audio" and item.attributions.shape == item.view.shape == (frames, 40)
    assert complete(item)
    png = Image.open(io.BytesIO(item.png()))
    assert png.format == "PNG"
    (occluded,) = explain(task, model, [wave], "occlusion")
    assert occluded.attributions.shape == (frames, 40)


def test_unsupported_task_is_a_clear_error():
    recipe = load_recipe("shakespeare-char")
    task = get_task(recipe.task)(recipe)
    with pytest.raises(ConfigError, match="not supported for task 'language_modeling'"):
        explain_batch(task, torch.nn.Linear(1, 1), None)


def test_explain_section_is_typed_and_checked():
    recipe = load_recipe("digits-cnn", ["explain.method=saliency", "explain.samples=2"])
    assert recipe.explain.method == "saliency" and recipe.explain.baseline == "black"
    with pytest.raises(ConfigError, match="explain.method"):
        load_recipe("digits-cnn", ["explain.method=lime"])
    with pytest.raises(ConfigError, match="Did you mean explain.samples"):
        load_recipe("digits-cnn", ["explain.sample=2"])


def test_text_rendering_escapes_and_colours_by_sign():
    html = render.html_tokens(["<b>", "good"], [-0.5, 1.0], caption="x & y")
    assert "&lt;b&gt;" in html and "x &amp; y" in html and "<b>" not in html
    assert "rgb(214,39,40)" in html  # the strongest positive token is fully red
    plain = render.terminal_tokens(["bad", "good"], [-0.25, 0.5], color=False)
    assert plain == "bad(-0.250) good(+0.500)"


def test_overlay_marks_positive_red_and_negative_blue():
    image = np.zeros((1, 4, 4), dtype=np.uint8)
    attribution = np.zeros((4, 4))
    attribution[0, 0], attribution[3, 3] = 1.0, -1.0
    picture = render.overlay(image, attribution, scale=1)
    assert tuple(picture[0, 0]) == render.POSITIVE and tuple(picture[3, 3]) == render.NEGATIVE
    assert tuple(picture[1, 1]) == (40, 40, 40)  # untouched pixels show the dimmed image


def test_a_damaged_gallery_becomes_a_note_in_the_report(tmp_path):
    from modelforge.explain.gallery import gallery_html

    assert gallery_html(tmp_path) is None  # no gallery: no section
    (tmp_path / "explanations").mkdir()
    (tmp_path / "explanations" / "index.json").write_text("{not json")
    note = gallery_html(tmp_path)
    assert "cannot read the explanation gallery" in note and note.startswith('<p class="muted">')
