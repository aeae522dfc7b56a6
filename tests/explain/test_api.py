"""``Predictor.explain`` and ``POST /models/{name}/explain`` through FastAPI's test client."""

import base64
import io

import numpy as np
import pytest
from conftest import digit_images
from fastapi.testclient import TestClient
from PIL import Image

from modelforge.core.errors import ConfigError
from modelforge.serve.app import ServeSettings, create_app


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def client(digits_run, text_run):
    with TestClient(create_app([digits_run.directory, text_run.directory], ServeSettings())) as test_client:
        yield test_client


def test_models_say_they_can_explain(client):
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["digits-cnn"]["explain"] is True and models["reviews-transformer"]["explain"] is True


def test_image_explanation_is_a_heat_map_and_a_png_overlay(client, digits_predictor):
    images, labels = digit_images(3)
    response = client.post("/models/digits-cnn/explain", json={"inputs": [b64(png_bytes(im)) for im in images]})
    assert response.status_code == 200, response.text
    found = response.json()["explanations"]
    assert len(found) == 3
    predicted = [p["label"] for p in digits_predictor.predict([png_bytes(im) for im in images])]
    for item, label in zip(found, predicted):
        assert item["label"] == label == item["target"] and item["method"] == "integrated_gradients"
        heat = np.array(item["attributions"])
        assert heat.shape == (16, 16) and np.abs(heat).max() > 0
        overlay = Image.open(io.BytesIO(base64.b64decode(item["overlay_png"])))
        assert overlay.format == "PNG" and overlay.size == (224, 224)
        assert abs(item["convergence_delta"]) < 0.05 * np.abs(heat).sum()


def test_method_and_target_come_from_the_query(client):
    image = b64(png_bytes(digit_images(1)[0][0]))
    response = client.post("/models/digits-cnn/explain?method=saliency&target=7", json={"inputs": [image]})
    assert response.status_code == 200, response.text
    (item,) = response.json()["explanations"]
    assert item["method"] == "saliency" and item["target"] == "7" and "convergence_delta" not in item
    assert min(min(row) for row in item["attributions"]) >= 0  # saliency = |gradient|


@pytest.mark.parametrize("query, words", [("method=shapley", "unknown explanation method 'shapley'"),
                                          ("target=eleven", "unknown target label 'eleven'")])
def test_bad_method_or_target_is_a_422_with_one_line(client, query, words):
    image = b64(png_bytes(digit_images(1)[0][0]))
    response = client.post(f"/models/digits-cnn/explain?{query}", json={"inputs": [image]})
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error"} and words in body["error"] and "\n" not in body["error"]


def test_bad_image_is_a_4xx_not_a_crash(client):
    response = client.post("/models/digits-cnn/explain", json={"inputs": [b64(b"not an image")]})
    assert 400 <= response.status_code < 500 and set(response.json()) == {"error"}


def test_text_explanation_gives_token_attributions_and_html(client):
    response = client.post("/models/reviews-transformer/explain", json={"inputs": ["The plot was Terrible"]})
    assert response.status_code == 200, response.text
    (item,) = response.json()["explanations"]
    assert [t["token"] for t in item["tokens"]] == ["The", "plot", "was", "Terrible"]  # original spelling
    assert item["html"].count('class="mf-token"') == 4 and "Terrible" in item["html"]
    total = sum(t["attribution"] for t in item["tokens"])
    assert abs(total) > 0 and abs(item["convergence_delta"]) <= 0.01 * max(abs(total), 1e-3) + 1e-4


def test_predictor_explain_defaults_to_the_recipe_section(digits_predictor):
    assert digits_predictor.recipe.explain.steps == 32 and digits_predictor.can_explain
    (item,) = digits_predictor.explain(png_bytes(digit_images(1)[0][0]), method="occlusion")
    assert item["method"] == "occlusion" and np.array(item["attributions"]).shape == (16, 16)
    with pytest.raises(ConfigError, match="unknown explanation method"):
        digits_predictor.explain(png_bytes(digit_images(1)[0][0]), method="lime")
