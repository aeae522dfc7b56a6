"""The HTTP API and web page for image captioning (image upload → caption): the Python API's caption for JSON and
multipart uploads, 4xx for bad images, 501 from /explain; in a real browser where Chromium is
installed, an uploaded picture's caption is shown as text. The artifact holds seeded, untrained weights."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch
from captioning_data import caption_folder
from fastapi.testclient import TestClient
from serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, served

from modelforge.artifacts.model_dir import save_artifact
from modelforge.artifacts.predictor import Predictor
from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe

SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=5))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("captioning-serve")
    csv = caption_folder(root / "data", count=9)
    recipe = load_recipe("scenes-captioner", [f"data.path={csv}", "data.image_size=16", "model.widths=[4,8]",
                                              "model.dim=16", "model.num_heads=2", "model.mlp_hidden=32"])
    task = get_task(recipe.task)(recipe)
    task.datasets()  # builds the caption vocabulary
    torch.manual_seed(0)
    save_artifact(root / "run" / "model", recipe, task, task.build_model().eval())
    return root


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app([f"captioner={run / 'run'}"], SETTINGS)) as test_client:
        yield test_client


def test_an_uploaded_image_gets_the_python_apis_caption(client, run):
    picture = run / "data" / "images" / "000.png"
    expected = Predictor(run / "run").predict([str(picture)])
    assert set(expected[0]) == {"caption"} and isinstance(expected[0]["caption"], str)
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["captioner"]["task"] == "image_captioning" and models["captioner"]["input"]["kind"] == "image"
    upload = client.post("/models/captioner/predict", files={"file": ("a.png", picture.read_bytes(), "image/png")})
    as_json = client.post("/models/captioner/predict",
                          json={"inputs": [base64.b64encode(picture.read_bytes()).decode("ascii")]})
    for response in (upload, as_json):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected


def test_bad_images_and_explanations_are_refused(client):
    bad = client.post("/models/captioner/predict", files={"file": ("notes.txt", b"not a picture at all")})
    assert bad.status_code == 422 and "not a readable image" in bad.json()["error"]
    explain = client.post("/models/captioner/explain", json={"inputs": ["x"]})
    assert explain.status_code == 501


@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_page_shows_the_caption_of_an_uploaded_picture(run):
    picture = run / "data" / "images" / "001.png"
    expected = Predictor(run / "run").predict([str(picture)])[0]["caption"]
    with served(create_app([f"captioner={run / 'run'}"], SETTINGS)) as url, browser_page(url, "captioner") as page:
        page.select_option("#model", "captioner")
        assert page.is_visible("#file-input") and page.get_attribute("#file", "accept") == "image/*"
        with page.expect_response("**/models/captioner/predict") as answered:
            page.set_input_files("#file", str(picture))
        assert answered.value.json()["predictions"][0]["caption"] == expected
        page.wait_for_selector("#result:not([hidden])")
        assert page.is_visible("#output-text") and page.text_content("#output-text") == expected
        assert page.is_hidden("#raw")
