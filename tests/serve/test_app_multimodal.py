"""The HTTP API of an image–text retrieval run: uploaded images scored against label prompts (zero-shot) or ranked
by a text query given in the query string, the plain embedding otherwise, and a 4xx for every bad option.

The artifact holds seeded, untrained weights: the API is under test, not the model.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import CHROMIUM, NO_CHROMIUM, browser_page, served

from modelforge.artifacts.model_dir import save_artifact
from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe

SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=5), max_text_chars=100, max_inputs=4)
COLOURS = {"red": (220, 30, 30), "blue": (40, 60, 230)}


def _png(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    import torch

    root = tmp_path_factory.mktemp("clip-serve")
    for name, rgb in COLOURS.items():
        (root / f"{name}.png").write_bytes(_png(rgb))
    (root / "captions.csv").write_text("image,caption\nred.png,a red picture\nblue.png,a blue picture\n")
    recipe = load_recipe("scenes-clip", ["data.source=files", f"data.path={root}", "data.test_fraction=0",
                                         "data.val_fraction=0", "data.tokenizer.kind=word",
                                         "data.init_text_encoder=null", "data.text_tower=train",
                                         "data.image_size=16", "model.dim=16",
                                         "model.num_layers=1", "model.num_heads=2", "model.mlp_hidden=32",
                                         "model.embed_dim=8", "model.image_widths=[4,8]"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    torch.manual_seed(0)
    save_artifact(root / "run" / "model", recipe, task, task.build_model().eval())
    return root / "run"


@pytest.fixture(scope="module")
def client(run):
    with TestClient(create_app([f"clip={run}"], SETTINGS)) as test_client:
        yield test_client


def _upload(client, query: str, colours=("red", "blue")):
    files = [("file", (f"{c}.png", _png(COLOURS[c]), "image/png")) for c in colours]
    return client.post(f"/models/clip/predict{query}", files=files)


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


def test_the_model_describes_its_query_options(client):
    (model,) = client.get("/models").json()["models"]
    assert model["task"] == "image_text_retrieval" and model["input"]["kind"] == "image"
    assert set(model["input"]["options"]) == {"labels", "query", "templates"} and model["input"]["image_size"] == 16


def test_uploads_are_scored_against_label_prompts(client):
    response = _upload(client, "?labels=a%20red%20picture&labels=a%20blue%20picture&labels=blue")
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for prediction in predictions:
        assert prediction["label"] in {"a red picture", "a blue picture", "blue"} and len(prediction["top"]) == 3
        assert sum(t["probability"] for t in prediction["top"]) == pytest.approx(1, abs=1e-4)


def test_label_prompts_can_be_ensembled_over_templates(client):
    response = _upload(client, "?labels=red&labels=blue&templates=a%20%7B%7D%20picture&templates=%7B%7D")
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        assert prediction["label"] in {"red", "blue"} and {t["label"] for t in prediction["top"]} == {"red", "blue"}


def test_a_text_query_ranks_the_posted_images(client):
    inputs = [base64.b64encode(_png(COLOURS[c])).decode() for c in ("red", "blue", "red")]
    response = client.post("/models/clip/predict?query=a%20red%20picture", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    ranked = response.json()["predictions"]
    assert sorted(r["rank"] for r in ranked) == [1, 2, 3]
    assert ranked[0]["score"] == pytest.approx(ranked[2]["score"], abs=1e-5)  # the same picture scores the same
    plain = _upload(client, "", ("red",)).json()["predictions"][0]
    assert set(plain) == {"embedding"} and np.linalg.norm(plain["embedding"]) == pytest.approx(1, abs=1e-4)


@pytest.mark.parametrize("query, status, words", [
    ("?colour=red", 422, ("unknown query option 'colour'", "labels, query, templates")),
    ("?labels=a&templates=a", 422, ("hold {} once",)),
    ("?query=a&templates=a%20%7B%7D", 422, ("give labels with them",)),
    ("?query=a&query=b", 422, ("give query once",)),
    ("?labels=a&labels=%20", 422, ("labels must be a non-empty text",)),
    ("?labels=a&query=b", 422, ("not both",)),
    ("?labels=a&labels=a", 422, ("differ",)),
    ("?query=" + "x" * 101, 413, ("over the 100 limit",)),
    ("?" + "&".join(f"labels=l{i}" for i in range(5)), 413, ("5 labels values",)),
])
def test_bad_options_are_client_errors(client, query, status, words):
    assert_error(_upload(client, query), status, *words)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_the_page_ranks_uploaded_images_by_a_text_query(run, tmp_path):
    import httpx

    files = []
    for name in ("red", "blue", "green"):
        files.append(tmp_path / f"{name}.png")
        files[-1].write_bytes(_png(COLOURS.get(name, (30, 200, 40))))
    with served(create_app([f"clip={run}"], SETTINGS)) as url, browser_page(url, "clip") as page:
        page.wait_for_selector("#compare-input:not([hidden])")
        assert page.is_hidden("#image-input") and page.is_hidden("#file-input")
        page.set_input_files("#compare-files", [str(f) for f in files])
        page.fill("#query", "a red picture")
        with page.expect_request("**/models/clip/predict?query=a%20red%20picture"):
            page.click("#rank")
        page.wait_for_selector("#pictures figure")
        shown = [page.locator("#pictures figcaption").nth(i).text_content() for i in range(3)]
        uploads = [("file", (f.name, f.read_bytes(), "image/png")) for f in files]
        expected = httpx.post(f"{url}/models/clip/predict?query=a%20red%20picture", files=uploads).json()
        by_rank = sorted(zip(expected["predictions"], files), key=lambda pair: pair[0]["rank"])
        assert [s.split()[:2] for s in shown] == [[f"#{p['rank']}", f.name] for p, f in by_rank]
        page.fill("#labels", "a red picture, a blue picture")
        page.click("#score-labels")
        page.wait_for_function("document.querySelectorAll('#predictions tr').length === 2")
        assert page.text_content("#label") in {"a red picture", "a blue picture"}
