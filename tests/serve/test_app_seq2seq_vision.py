"""The HTTP API for translation and summarization (text → text), detection (image → boxes), segmentation (image →
class mask PNG) and autoencoding (image → reconstruction PNG): the same answers as the Python API for JSON and for
multipart uploads, a 4xx JSON error for every bad input, 501 from /explain; and the web page for them, in a real
browser where Chromium is installed.

The artifacts hold seeded, untrained weights: the API is under test, not the models.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, served
from tiny_corpora import parallel_pairs

from modelforge.artifacts.model_dir import save_artifact
from modelforge.artifacts.predictor import Predictor
from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe

SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=5), max_text_chars=200)
SEQ2SEQ = ["data.source=parallel", "data.tokenizer.vocab_size=300", "data.tokenizer.min_frequency=1",
           "data.val_limit=2", "data.test_limit=2", "data.decoding.beam_size=2", "data.decoding.max_new_tokens=8"]
SENTENCE = "the red house and the blue sky"
TEXT_MODELS = ("translator", "summarizer")
IMAGE_MODELS = ("detector", "segmenter", "autoencoder")


def _save(root: Path, recipe, task, zero_head_bias: bool = False) -> Path:
    torch.manual_seed(0)
    model = task.build_model().eval()
    if zero_head_bias:  # an untrained U-Net's head bias outweighs its features: every pixel would be one class
        with torch.no_grad():
            model.head.bias.zero_()
    save_artifact(root / "model", recipe, task, model)
    return root


def _picture(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    """An RGB picture (width × height) of a bright square on a dark background."""
    pixels = np.full((size[1], size[0], 3), 40, dtype=np.uint8)
    pixels[8:22, 10:26] = (220, 200, 60)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq-vision-serve")
    pairs = parallel_pairs(root / "pairs.tsv", 40)
    built = {}
    recipe = load_recipe("seq2seq-attention", [*SEQ2SEQ, f"data.path={pairs}", "model.embed_dim=16",
                                               "model.hidden_size=16"])
    task = get_task(recipe.task)(recipe)
    task.datasets()  # builds the tokenizers on the pairs
    built["translator"] = _save(root / "translator", recipe, task)

    recipe = load_recipe("bbc-headline", [*SEQ2SEQ, f"data.path={pairs}", "model.dim=16", "model.num_layers=1",
                                          "model.num_decoder_layers=1", "model.num_heads=2", "model.mlp_hidden=32"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    built["summarizer"] = _save(root / "summarizer", recipe, task)

    # a zero score threshold: even an untrained detector returns its strongest peaks as boxes
    recipe = load_recipe("scenes-detector", ["data.image_size=32", "data.score_threshold=0", "data.max_detections=3",
                                             "model.width=4", "model.neck_channels=4", "model.head_channels=4"])
    task = get_task(recipe.task)(recipe, state={"labels": ["square", "circle"], "category_ids": [1, 2],
                                                "image_size": 32, "mean": [0.3] * 3, "std": [0.2] * 3})
    built["detector"] = _save(root / "detector", recipe, task)

    recipe = load_recipe("road-scenes", ["model.width=4", "model.depth=2"])
    task = get_task(recipe.task)(recipe, state={"labels": ["background", "spot"], "channels": 3,
                                                "image_size": [16, 16], "value_max": 255.0,
                                                "mean": [0.3] * 3, "std": [0.2] * 3})
    built["segmenter"] = _save(root / "segmenter", recipe, task, zero_head_bias=True)

    recipe = load_recipe("mnist-autoencoder", ["model.channels=[4,8]", "model.latent_dim=6"])
    task = get_task(recipe.task)(recipe, state={"channels": 1, "image_size": 16, "noise": "none",
                                                "noise_std": 0.0, "noise_amount": 0.0})
    built["autoencoder"] = _save(root / "autoencoder", recipe, task)
    built["pictures"] = root
    return built


def _served_runs(runs: dict[str, Path]) -> list[str]:
    return [f"{name}={runs[name]}" for name in (*TEXT_MODELS, *IMAGE_MODELS)]


@pytest.fixture(scope="module")
def client(runs):
    with TestClient(create_app(_served_runs(runs), SETTINGS)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def picture(runs) -> Path:
    return _picture(runs["pictures"] / "square.png")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decoded(base64_png: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(base64_png))) as img:
        return np.asarray(img)


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


# ---- endpoints --------------------------------------------------------------------------------------------------
def test_models_describe_their_tasks_and_inputs(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert {name: m["task"] for name, m in models.items()} == {
        "translator": "translation", "summarizer": "summarization", "detector": "detection",
        "segmenter": "segmentation", "autoencoder": "autoencoding"}
    assert models["translator"]["input"] == models["summarizer"]["input"] == {"kind": "text"}
    assert models["detector"]["input"] == {"kind": "image", "channels": 3, "image_size": 32,
                                           "labels": ["square", "circle"]}
    assert models["segmenter"]["input"] == {"kind": "image", "channels": 3, "image_size": [16, 16],
                                            "labels": ["background", "spot"]}
    assert models["autoencoder"]["input"] == {"kind": "image", "channels": 1, "image_size": 16, "output": "image"}
    assert not any(m["explain"] for m in models.values())
    assert "generation" not in models["translator"]  # a seq2seq model is not served as a prompt continuer


@pytest.mark.parametrize(("name", "field"), [("translator", "translation"), ("summarizer", "summary")])
def test_text_to_text_from_json_and_form_fields(client, runs, name, field):
    texts = [SENTENCE, "a green tree"]
    response = client.post(f"/models/{name}/predict", json={"inputs": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == Predictor(runs[name]).predict(texts)
    assert all(set(p) == {field} and isinstance(p[field], str) for p in predictions)
    form = client.post(f"/models/{name}/predict", data={"text": texts})
    assert form.status_code == 200, form.text
    assert form.json()["predictions"] == predictions
    upload = client.post(f"/models/{name}/predict", files={"file": ("s.txt", SENTENCE.encode(), "text/plain")})
    assert upload.status_code == 200, upload.text
    assert upload.json()["predictions"] == predictions[:1]


def test_detection_boxes_are_in_the_uploaded_pictures_pixels(client, runs, picture):
    expected = Predictor(runs["detector"]).predict([str(picture)])
    as_json = client.post("/models/detector/predict", json={"inputs": [_b64(picture.read_bytes())]})
    as_upload = client.post("/models/detector/predict", files={"file": ("square.png", picture.read_bytes(),
                                                                        "image/png")})
    for response in (as_json, as_upload):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected
    boxes = expected[0]["boxes"]
    assert 1 <= len(boxes) <= 3  # score threshold 0: the top peaks, capped by data.max_detections
    for found in boxes:
        assert set(found) == {"label", "score", "box"} and found["label"] in ("square", "circle")
        x, y, w, h = found["box"]
        assert 0 <= found["score"] <= 1 and 0 <= x and 0 <= y and x + w <= 40.01 and y + h <= 30.01


def test_segmentation_mask_has_the_uploaded_pictures_size(client, runs, picture):
    expected = Predictor(runs["segmenter"]).predict([str(picture)])
    as_json = client.post("/models/segmenter/predict", json={"inputs": ["data:image/png;base64,"
                                                                        + _b64(picture.read_bytes())]})
    as_upload = client.post("/models/segmenter/predict", files={"file": ("square.png", picture.read_bytes())})
    for response in (as_json, as_upload):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected
    (found,) = expected
    assert set(found) == {"mask_png", "classes", "size"} and found["size"] == [30, 40]
    mask = _decoded(found["mask_png"])
    assert mask.shape == (30, 40) and set(np.unique(mask)) == {0, 1}  # class indices, at the input's size
    assert sum(found["classes"].values()) == pytest.approx(1, abs=1e-3)
    assert found["classes"]["spot"] == pytest.approx((mask == 1).mean(), abs=1e-4)  # the shares are the mask's


def test_autoencoder_reconstructs_at_its_own_size(client, runs, picture):
    other = _picture(runs["pictures"] / "wide.png", size=(64, 20))
    files = [("file", (path.name, path.read_bytes(), "image/png")) for path in (picture, other)]
    response = client.post("/models/autoencoder/predict", files=files)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert predictions == Predictor(runs["autoencoder"]).predict([str(picture), str(other)])
    for found in predictions:
        assert set(found) == {"reconstruction_png", "width", "height"} and (found["width"], found["height"]) == (16, 16)
        image = _decoded(found["reconstruction_png"])
        assert image.shape == (16, 16) and image.dtype == np.uint8
    as_json = client.post("/models/autoencoder/predict", json={"inputs": [_b64(picture.read_bytes())]})
    assert as_json.status_code == 200 and as_json.json()["predictions"] == predictions[:1]


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_bad_texts_are_4xx(client, name):
    assert_error(client.post(f"/models/{name}/predict", json={"inputs": ["  \n "]}), 422, "inputs[0] is empty")
    assert_error(client.post(f"/models/{name}/predict", json={"inputs": [SENTENCE, "x" * 201]}), 413,
                 "inputs[1] is 201 characters", "200 character limit")
    assert_error(client.post(f"/models/{name}/predict", json={"inputs": [7]}), 422, "must be a string")
    assert_error(client.post(f"/models/{name}/predict", json={"inputs": []}), 422, "no inputs")
    assert_error(client.post(f"/models/{name}/predict", json={"texts": [SENTENCE]}), 422, '"inputs"')


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_bad_images_are_4xx(client, name):
    assert_error(client.post(f"/models/{name}/predict", files={"file": ("notes.txt", b"not a picture at all")}),
                 422, "inputs[0] is not a readable image")
    assert_error(client.post(f"/models/{name}/predict", json={"inputs": [_b64(b"GIF89a broken")]}), 422,
                 "not a readable image")
    assert_error(client.post(f"/models/{name}/predict", json={"inputs": ["a picture, please"]}), 422,
                 "inputs[0] is not valid base64")


@pytest.mark.parametrize("name", [*TEXT_MODELS, *IMAGE_MODELS])
def test_explain_is_not_offered(client, name):
    assert_error(client.post(f"/models/{name}/explain", json={"inputs": [SENTENCE]}), 501,
                 f"model {name!r}", "does not support explanations")


# ---- the web page -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_page_translates_text_and_shows_masks_and_boxes_of_uploads(runs, picture):
    with served(create_app(_served_runs(runs), SETTINGS)) as url, browser_page(url, "autoencoder") as page:
        page.select_option("#model", "translator")
        assert page.is_visible("#text-input") and page.is_hidden("#file-input")
        assert page.text_content("#predict-text") == "Predict text"
        page.fill("#text", SENTENCE)
        with page.expect_response("**/models/translator/predict") as answered:
            page.click("#predict-text")
        translation = answered.value.json()["predictions"][0]["translation"]
        page.wait_for_selector("#result:not([hidden])")
        assert translation == Predictor(runs["translator"]).predict([SENTENCE])[0]["translation"]
        assert page.is_visible("#output-text") and page.text_content("#output-text") == translation
        assert page.is_hidden("#raw") and page.is_hidden("#label") and page.is_hidden("#explain")

        page.select_option("#model", "segmenter")
        assert page.is_visible("#file-input") and page.get_attribute("#file", "accept") == "image/*"
        with page.expect_response("**/models/segmenter/predict") as answered:
            page.set_input_files("#file", str(picture))
        mask = answered.value.json()["predictions"][0]["mask_png"]
        page.wait_for_selector("#pictures img")
        assert page.locator("#pictures img").count() == 1
        assert page.get_attribute("#pictures img", "src") == "data:image/png;base64," + mask
        assert page.text_content("#pictures figcaption") == "mask"
        assert '"(picture shown)"' in page.text_content("#raw") and '"spot"' in page.text_content("#raw")

        page.select_option("#model", "detector")
        with page.expect_response("**/models/detector/predict") as answered:
            page.set_input_files("#file", str(picture))
        boxes = answered.value.json()["predictions"][0]["boxes"]
        assert boxes  # the recipe's zero score threshold makes boxes certain
        page.wait_for_selector("#boxes:not([hidden])")
        # the canvas is the picture that was sent, at its own size, with the boxes drawn over it
        assert page.evaluate("[document.getElementById('boxes').width, document.getElementById('boxes').height]") \
            == [40, 30]
        assert page.is_hidden("#pictures") and '"boxes"' in page.text_content("#raw")
        assert page.text_content("#status") == ""
