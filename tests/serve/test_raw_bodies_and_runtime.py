"""Predict with one raw file as the body (image/png, image/jpeg, audio/wav, application/octet-stream), with mismatched
or bad bodies answered 4xx in one line; the batched forward in onnxruntime when the run has a matching export (and
in PyTorch otherwise); and predict's fast path keeping the guards and the error shape of the documented route.

The artifacts hold seeded, untrained weights: the API is under test, not the models.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tiny_runs import image_run, keyword_run, sentiment_run, wav_bytes

from modelforge.artifacts.model_dir import load_artifact, save_artifact
from modelforge.core.errors import ArtifactError
from modelforge.serve.app import ServeSettings, create_app, load_models
from modelforge.serve.batching import BatchSettings

SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, window="adaptive"), api_key="k", max_audio_seconds=2.0)
KEY = {"X-API-Key": "k"}


def png_bytes(fmt: str = "PNG", size: int = 16) -> bytes:
    rng = np.random.default_rng(1)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and all(word in message for word in words), message


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw-bodies")
    return {"image": image_run(root), "kws": keyword_run(root), "sentiment": sentiment_run(root)}


@pytest.fixture(scope="module")
def client(runs):
    app = create_app([f"{name}={path}" for name, path in runs.items()], SETTINGS)
    with TestClient(app) as test_client:
        yield test_client


def _post(client, model: str, body: bytes, content_type: str):
    return client.post(f"/models/{model}/predict", content=body, headers={"Content-Type": content_type, **KEY})


@pytest.mark.parametrize(("model", "content_type", "body"), [
    ("image", "image/png", png_bytes()), ("image", "image/jpeg", png_bytes("JPEG")),
    ("image", "application/octet-stream", png_bytes()), ("kws", "audio/wav", wav_bytes(0.5)),
    ("kws", "audio/x-wav", wav_bytes(0.5)), ("kws", "application/octet-stream", wav_bytes(0.5))])
def test_a_raw_body_predicts_as_its_json_form_does(client, model, content_type, body):
    raw = _post(client, model, body, content_type)
    as_json = client.post(f"/models/{model}/predict", json={"inputs": [base64.b64encode(body).decode()]}, headers=KEY)
    assert raw.status_code == 200, raw.text
    assert raw.json() == as_json.json() and len(raw.json()["predictions"]) == 1


@pytest.mark.parametrize(("model", "content_type", "body", "status", "words"), [
    ("kws", "image/png", png_bytes(), 422, ["image/png", "audio inputs"]),
    ("image", "audio/wav", wav_bytes(0.5), 422, ["audio/wav", "image inputs"]),
    ("sentiment", "application/octet-stream", b"good film", 422, ["text inputs"]),
    ("image", "image/png", png_bytes("JPEG"), 422, ["not image/png"]),
    ("image", "image/jpeg", png_bytes(), 422, ["not image/jpeg"]),
    ("image", "image/png", b"", 422, ["body is empty"]),
    ("image", "application/octet-stream", b"\x00garbage" * 10, 422, ["not a readable image"]),
    ("image", "image/png", png_bytes()[:40], 422, ["image"]),  # a valid header, then nothing: the decoder refuses
    ("kws", "audio/wav", b"RIFF\x00\x00\x00\x00WAVEjunk", 422, ["not a readable WAV"]),
    ("kws", "audio/wav", wav_bytes(2.5), 413, ["2 s limit"]),
    ("image", "audio/mpeg", b"ID3", 415, ["audio/mpeg", "image/png"]),
])
def test_bad_or_mismatched_raw_bodies_are_one_line_4xx(client, model, content_type, body, status, words):
    assert_error(_post(client, model, body, content_type), status, *words)


def test_a_huge_png_header_is_413_before_decoding(client):
    header = png_bytes()[:33]  # signature + IHDR; width and height are bytes 16..24
    huge = header[:16] + (50_000).to_bytes(4, "big") + (50_000).to_bytes(4, "big") + header[24:]
    assert_error(_post(client, "image", huge, "image/png"), 413, "50000×50000", "pixel limit")


def test_the_fast_path_keeps_the_guards_and_the_routes_answers(client):
    assert_error(client.post("/models/image/predict", content=png_bytes(), headers={"Content-Type": "image/png"}),
                 401, "API key")
    assert_error(_post(client, "nope", png_bytes(), "image/png"), 404, "unknown model")
    assert client.post("/models/image/extra/predict", content=b"x", headers=KEY).status_code == 404
    assert client.get("/models/image/predict", headers=KEY).status_code == 405  # not a POST: FastAPI answers


def test_predict_is_answered_by_the_fast_path_not_the_router(runs):
    app = create_app([f"image={runs['image']}"], SETTINGS)
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/models/{name}/predict"]
    with TestClient(app) as test_client:  # the documented route is gone: only the fast path can answer
        assert _post(test_client, "image", png_bytes(), "image/png").status_code == 200
        assert test_client.post("/models/image/predict", content=png_bytes(), headers={"Content-Type": "image/png"}
                                ).status_code == 401  # and still behind the key


def test_openapi_lists_the_raw_body_types(client):
    body = client.get("/openapi.json").json()["paths"]["/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data", "image/png", "image/jpeg", "audio/wav",
            "application/octet-stream"} <= set(body)


def test_onnx_runtime_serves_an_exported_run_with_the_same_predictions(tmp_path):
    import modelforge

    run = image_run(tmp_path)
    torch_models = load_models([run], BatchSettings(), runtime="auto")
    assert torch_models["image"].runtime == "torch"  # no export yet
    modelforge.load(run).export("onnx")
    onnx_models = load_models([run], BatchSettings(), runtime="auto")
    assert onnx_models["image"].runtime == "onnx"
    items = [png_bytes(size=s) for s in (16, 20, 9)]
    expected = torch_models["image"].batcher.run_batch(items)
    got = onnx_models["image"].batcher.run_batch(items)
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    assert np.allclose([p["probability"] for p in got], [p["probability"] for p in expected], atol=1e-4)
    assert load_models([run], BatchSettings(), runtime="torch")["image"].runtime == "torch"


def test_a_stale_export_falls_back_to_torch_and_onnx_only_refuses(tmp_path, caplog):
    import modelforge

    run, other = image_run(tmp_path / "a"), image_run(tmp_path / "b")
    modelforge.load(run).export("onnx")
    (other / "model.onnx").write_bytes((run / "model.onnx").read_bytes())
    loaded = load_artifact(other / "model")
    with torch.no_grad():  # the weights change after the export was made: it no longer matches them
        for parameter in loaded.model.parameters():
            parameter.add_(0.5)
    save_artifact(other / "model", loaded.recipe, loaded.task, loaded.model)
    caplog.set_level(logging.WARNING, logger="modelforge.serve")
    assert load_models([other], BatchSettings())["image"].runtime == "torch"
    assert any("does not match" in r.getMessage() for r in caplog.records)
    with pytest.raises(ArtifactError, match="model.onnx"):  # asked for onnxruntime: no silent fallback
        load_models([other], BatchSettings(), runtime="onnx")


def test_a_task_with_its_own_forward_stays_on_torch(runs):
    (runs["sentiment"] / "model.onnx").write_bytes(b"not consulted")  # text classification overrides forward
    assert load_models([runs["sentiment"]], BatchSettings())["sentiment"].runtime == "torch"
