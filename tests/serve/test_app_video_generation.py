"""The HTTP API for video classification (an uploaded clip, decoded on the server) and image generation (integer
seeds → PNG images): the same answers as the Python API, and a 4xx JSON error for every bad input.

The artifacts hold seeded, untrained weights: the API is under test, not the models.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, served

from modelforge.artifacts.model_dir import save_artifact
from modelforge.artifacts.predictor import Predictor
from modelforge.data.builtin.moving_digits import ClipParams, render_clip
from modelforge.data.formats.video import write_video
from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe

SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=5), max_video_frames=40, max_inputs=6)


def _save(root: Path, recipe, task) -> Path:
    torch.manual_seed(0)
    save_artifact(root / "model", recipe, task, task.build_model().eval())
    return root


def _clip_file(path: Path, frames: int = 12, label: int = 2) -> Path:
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 8:20] = 255
    return write_video(path, render_clip(np.random.default_rng(label), digit, label, ClipParams(frames=frames,
                                                                                                  size=32)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video-gan-serve")
    recipe = load_recipe("moving-digits", ["data.num_frames=4", "data.image_size=16", "model.channels=[4,8]"])
    task = get_task(recipe.task)(recipe, state={"labels": ["left", "right", "up", "down", "static"],
                                                "num_frames": 4, "channels": 1, "image_size": 16,
                                                "mean": [0.1], "std": [0.3]})
    video = _save(root / "video", recipe, task)
    recipe = load_recipe("mnist-dcgan", ["model.width=4", "model.latent_dim=8"])
    task = get_task(recipe.task)(recipe, state={"channels": 1, "image_size": 28})
    gan = _save(root / "gan", recipe, task)
    return {"video": video, "gan": gan, "clips": root}


@pytest.fixture(scope="module")
def client(runs):
    with TestClient(create_app([runs["video"], runs["gan"]], SETTINGS)) as test_client:
        yield test_client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_models_describe_video_and_seed_inputs(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["video"]["input"] == {"kind": "video", "channels": 1, "image_size": 16, "num_frames": 4}
    assert models["gan"]["input"] == {"kind": "seed", "channels": 1, "image_size": 28}
    assert models["gan"]["explain"] is False


def test_an_uploaded_clip_gets_the_prediction_of_the_file_on_disk(client, runs):
    path = _clip_file(runs["clips"] / "right.avi")
    expected = Predictor(runs["video"]).predict([str(path)])[0]
    uploads_before = set(Path(tempfile.gettempdir()).glob("modelforge-upload-*"))
    as_json = client.post("/models/video/predict", json={"inputs": [_b64(path.read_bytes())]})
    assert as_json.status_code == 200, as_json.text
    as_upload = client.post("/models/video/predict", files={"file": ("clip.avi", path.read_bytes(), "video/x-msvideo")})
    assert as_upload.status_code == 200, as_upload.text
    for response in (as_json, as_upload):
        got = response.json()["predictions"][0]
        assert got["label"] == expected["label"]
        assert [t["label"] for t in got["top"]] == [t["label"] for t in expected["top"]]
        np.testing.assert_allclose([t["probability"] for t in got["top"]],
                                   [t["probability"] for t in expected["top"]], atol=1e-5)
    leftovers = set(Path(tempfile.gettempdir()).glob("modelforge-upload-*")) - uploads_before
    assert not leftovers  # the decoded upload's temporary file is gone


def test_bad_videos_get_4xx_json_errors(client, runs):
    long_clip = _clip_file(runs["clips"] / "long.avi", frames=60)
    cases = [
        ({"inputs": [_b64(b"RIFF" + bytes(range(256)) * 4)]}, 422, "inputs[0] is not a readable video"),
        ({"inputs": [_b64(long_clip.read_bytes())]}, 413, "60 frames, over the 40 frame limit"),
        ({"inputs": ["not base64 !"]}, 422, "inputs[0] is not valid base64"),
    ]
    for body, status, message in cases:
        response = client.post("/models/video/predict", json=body)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
        assert "modelforge-upload" not in response.json()["error"]  # the temporary file's name never leaks


def _png(prediction: dict) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(prediction["image_png"]))) as img:
        return np.asarray(img)


def test_seeds_draw_one_image_each_and_repeat_exactly(client, runs):
    response = client.post("/models/gan/predict", json={"inputs": [7, 7, 8]})
    assert response.status_code == 200, response.text
    first, same, other = (_png(p) for p in response.json()["predictions"])
    assert first.shape == (28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, same) and not np.array_equal(first, other)
    # a form field works too, and the image does not depend on what it was batched with
    form = client.post("/models/gan/predict", data={"seed": "8"})
    assert form.status_code == 200, form.text
    assert np.array_equal(_png(form.json()["predictions"][0]), other)
    assert form.json()["predictions"] == Predictor(runs["gan"]).predict([8])


@pytest.mark.parametrize(("inputs", "status", "message"), [
    (["abc"], 422, "inputs[0] must be an integer seed"),
    ([-1], 422, "inputs[0]: seed -1 is outside"),
    ([1.5], 422, "inputs[0] must be an integer seed"),
    ([True], 422, "inputs[0] must be an integer seed"),
    ([1, 2, 3, 4, 5, 6, 7], 413, "7 inputs in one request, over the limit of 6"),
])
def test_bad_seeds_get_4xx_json_errors(client, inputs, status, message):
    response = client.post("/models/gan/predict", json={"inputs": inputs})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_a_generator_has_no_explanations(client):
    response = client.post("/models/gan/explain", json={"inputs": [1]})
    assert response.status_code == 501 and "does not support explanations" in response.json()["error"]


# ---- the web page -----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_page_generates_images_and_classifies_an_uploaded_clip(runs):
    clip = _clip_file(runs["clips"] / "page.avi")
    app = create_app([f"clips={runs['video']}", f"digits={runs['gan']}"], SETTINGS)
    with served(app) as url, browser_page(url, "digits") as page:
        page.select_option("#model", "digits")
        assert page.is_visible("#seed-input") and page.is_hidden("#file-input")
        page.fill("#seed-count", "3")
        with page.expect_response("**/models/digits/predict") as answered:
            page.click("#generate")
        seeds = answered.value.request.post_data_json["inputs"]
        page.wait_for_selector("#pictures:not([hidden])")
        pictures = page.locator("#pictures img")
        assert pictures.count() == len(seeds) == 3
        assert page.locator("#pictures figcaption").all_text_contents() == [f"seed {s}" for s in seeds]
        # the page shows the server's images: the first one is the image of its seed
        expected = Predictor(runs["gan"]).predict([seeds[0]])[0]["image_png"]
        assert pictures.nth(0).get_attribute("src") == "data:image/png;base64," + expected

        page.select_option("#model", "clips")
        assert "video/*" in page.get_attribute("#file", "accept") and page.is_hidden("#seed-input")
        with page.expect_response("**/models/clips/predict"):
            page.set_input_files("#file", str(clip))
        page.wait_for_selector("#predictions tr")
        expected = Predictor(runs["video"]).predict([str(clip)])[0]
        assert page.text_content("#label") == expected["label"] and page.is_hidden("#pictures")
        assert page.locator("#predictions tr").count() == len(expected["top"])
        assert page.text_content("#status") == ""
