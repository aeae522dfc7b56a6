import asyncio
import base64
import io
import json
import time
import wave

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import digit_png

from modelforge.explain.predictor import ExplainingPredictor
from modelforge.serve.app import ClientError, ServedModel, ServeSettings, create_app, validate_item
from modelforge.serve.batching import BatchSettings, MicroBatcher


@pytest.fixture(scope="module")
def predictor(digits_run):
    return ExplainingPredictor(digits_run.directory)


@pytest.fixture(scope="module")
def client(digits_run):
    settings = ServeSettings(batch=BatchSettings(max_batch_size=16, max_wait_ms=20), max_body_bytes=64 * 1024,
                             max_inputs=8, max_image_pixels=256 * 256)
    with TestClient(create_app([digits_run.directory], settings)) as test_client:
        yield test_client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


# ---- endpoints ------------------------------------------------------------------------------------------------
def test_health(client):
    assert client.get("/health").json() == {"status": "ok", "models": 1}


def test_models_lists_task_labels_and_input_spec(client):
    (model,) = client.get("/models").json()["models"]
    assert model["name"] == "digits-cnn" and model["task"] == "image_classification"
    assert model["labels"] == [str(i) for i in range(10)]
    assert model["input"] == {"kind": "image", "channels": 1, "image_size": 16}
    assert model["explain"] is True and model["batching"]["max_batch_size"] == 16
    assert client.get("/models/digits-cnn").json()["name"] == "digits-cnn"


def test_predict_json_matches_the_predictor(client, predictor):
    pngs = [digit_png(i)[0] for i in range(3)]
    response = client.post("/models/digits-cnn/predict", json={"inputs": [b64(p) for p in pngs]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits-cnn"
    assert body["predictions"] == predictor.predict(pngs)
    first = body["predictions"][0]
    assert first["label"] in predictor.task.labels and abs(sum(t["probability"] for t in first["top"]) - 1) < 0.5


def test_predict_accepts_data_urls_and_multipart_uploads(client, predictor):
    png, _ = digit_png(5)
    expected = predictor.predict([png])
    url = "data:image/png;base64," + b64(png)
    assert client.post("/models/digits-cnn/predict", json={"inputs": [url]}).json()["predictions"] == expected
    files = [("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "application/octet-stream"))]
    response = client.post("/models/digits-cnn/predict", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected * 2


def test_explain_is_501_for_tasks_without_explanations(predictor):
    # a predictor without ``explain`` (image classification has explanations: see tests/explain/test_api.py)
    with TestClient(_app_with(SlowPredictor(predictor), BatchSettings())) as test_client:
        response = test_client.post("/models/slow/explain", json={"inputs": [b64(digit_png(0)[0])]})
    assert_error(response, 501, "does not support explanations")


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/models", "/models/{name}/predict", "/models/{name}/explain"} <= set(paths)
    body = paths["/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)


def test_web_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="canvas"' in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# ---- every 4xx ----------------------------------------------------------------------------------------------------
def test_unknown_model_and_route(client):
    assert_error(client.post("/models/nope/predict", json={"inputs": []}), 404, "unknown model 'nope'", "digits-cnn")
    assert_error(client.get("/models/nope"), 404, "unknown model")
    assert_error(client.get("/no/such/path"), 404)
    assert_error(client.get("/models/digits-cnn/predict"), 405)


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"content": b"inputs=1", "headers": {"Content-Type": "text/plain"}}, 415, ["text/plain"]),
        ({"content": b"{}"}, 415, ["(none)"]),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, ["not valid JSON"]),
        ({"json": {"input": "x"}}, 422, ['"inputs"']),
        ({"json": ["x"]}, 422, ['"inputs"']),
        ({"json": {"inputs": []}}, 422, ["no inputs"]),
        ({"json": {"inputs": [42]}}, 422, ["inputs[0]", "base64"]),
        ({"json": {"inputs": ["not base64!!"]}}, 422, ["inputs[0]", "not valid base64"]),
        ({"json": {"inputs": [base64.b64encode(b"plain text, not an image").decode()]}}, 422, ["not a readable image"]),
        ({"json": {"inputs": ["aGk="] * 9}}, 413, ["9 inputs", "limit of 8"]),
        ({"files": [("field", (None, "value"))]}, 422, ["no inputs"]),
    ],
)
def test_bad_requests_get_json_4xx(client, kwargs, status, words):
    assert_error(client.post("/models/digits-cnn/predict", **kwargs), status, *words)


def test_image_pixel_limit(client):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (300, 300)).save(buffer, format="PNG")  # 90k pixels > 256×256, yet a tiny file
    assert_error(client.post("/models/digits-cnn/predict", json={"inputs": [b64(buffer.getvalue())]}), 413,
                 "300×300", "pixel limit")


def test_body_size_limit_declared_and_chunked(client):
    big = {"inputs": ["A" * (70 * 1024)]}
    assert_error(client.post("/models/digits-cnn/predict", json=big), 413, "byte limit")

    def chunks():
        for _ in range(20):
            yield b"x" * 8192

    response = client.post("/models/digits-cnn/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "byte limit")


def test_a_broken_image_fails_alone_in_its_batch(digits_run, predictor):
    """A PNG whose header reads but whose data is cut: 422 for it, and a concurrent good request still succeeds."""
    png, _ = digit_png(1, size=64)
    truncated = png[: len(png) // 2]
    app = create_app([digits_run.directory], ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=100)))

    async def main():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            good, bad = await asyncio.gather(
                http.post("/models/digits-cnn/predict", json={"inputs": [b64(png)]}),
                http.post("/models/digits-cnn/predict", json={"inputs": [b64(truncated)]}),
            )
        await app.state.models["digits-cnn"].batcher.stop()
        return good, bad

    good, bad = asyncio.run(main())
    assert good.status_code == 200 and good.json()["predictions"] == predictor.predict([png])
    assert_error(bad, 422, "not a readable image")


def test_concurrent_requests_share_model_calls(digits_run):
    app = create_app([digits_run.directory], ServeSettings(batch=BatchSettings(max_batch_size=32, max_wait_ms=50)))
    payload = {"inputs": [b64(digit_png(7)[0])]}

    async def main():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(*(http.post("/models/digits-cnn/predict", json=payload)
                                               for _ in range(20)))
        batcher = app.state.models["digits-cnn"].batcher
        await batcher.stop()
        return responses, batcher.stats

    responses, stats = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert len({json.dumps(r.json()) for r in responses}) == 1
    assert stats.requests == 20 and stats.batches < 20 and stats.largest_batch > 1


class SlowPredictor:
    """Wraps a predictor with a fixed delay, to fill the queue; or raises an unexpected error."""

    def __init__(self, inner, delay=0.0, crash=False):
        self.inner, self.delay, self.crash = inner, delay, crash
        self.task, self.recipe = inner.task, inner.recipe

    def predict(self, items):
        time.sleep(self.delay)
        if self.crash:
            raise RuntimeError("secret internal detail")
        return self.inner.predict(items)


def _app_with(predictor, batch: BatchSettings):
    served = ServedModel("slow", predictor, MicroBatcher(predictor.predict, batch, "slow"))
    return create_app({"slow": served}, ServeSettings(batch=batch))


def test_full_queue_gives_503_with_retry_after(predictor):
    slow = SlowPredictor(predictor, delay=0.3)
    app = _app_with(slow, BatchSettings(max_batch_size=1, max_wait_ms=0, queue_size=1))
    payload = {"inputs": [b64(digit_png(0)[0])]}

    async def main():
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            responses = await asyncio.gather(*(http.post("/models/slow/predict", json=payload) for _ in range(5)))
        await app.state.models["slow"].batcher.stop()
        return responses

    responses = asyncio.run(main())
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["Retry-After"] == "1"
    assert_error(busy, 503, "busy")


def test_unexpected_model_error_is_a_500_without_details(predictor):
    app = _app_with(SlowPredictor(predictor, crash=True), BatchSettings())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.post("/models/slow/predict", json={"inputs": [b64(digit_png(0)[0])]})
    assert_error(response, 500, "internal server error")
    assert "secret" not in response.text


def test_api_key_is_required_when_set(digits_run):
    settings = ServeSettings(api_key="s3cret-key")
    payload = {"inputs": [b64(digit_png(0)[0])]}
    with TestClient(create_app([digits_run.directory], settings)) as test_client:
        assert test_client.get("/health").status_code == 200  # liveness stays open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-ke"}):
            response = test_client.post("/models/digits-cnn/predict", json=payload, headers=headers)
            assert_error(response, 401, "API key")
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert_error(test_client.get("/models"), 401)
        bearer = {"Authorization": "Bearer s3cret-key"}
        ok = test_client.post("/models/digits-cnn/predict", json=payload, headers=bearer)
        assert ok.status_code == 200
        assert test_client.get("/models", headers={"X-API-Key": "s3cret-key"}).status_code == 200


def test_runs_are_named_and_duplicates_refused(digits_run):
    from modelforge.core.errors import ArtifactError, ConfigError

    app = create_app([f"first={digits_run.directory}", digits_run.model_dir], ServeSettings())
    assert list(app.state.models) == ["first", "digits-cnn"]
    with pytest.raises(ConfigError, match="NAME=RUN"):
        create_app([digits_run.directory, digits_run.model_dir])
    with pytest.raises(ArtifactError, match="not a run"):
        create_app(["/nonexistent/run"])


# ---- text and audio validation (for the text and speech tasks) ------------------------------------------------------
def _wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes(np.zeros(int(seconds * rate), dtype="<i2").tobytes())
    return buffer.getvalue()


def test_audio_and_text_limits():
    settings = ServeSettings(max_audio_seconds=2.0, max_text_chars=10)
    wav = _wav(1.5)
    assert validate_item("audio", b64(wav), "inputs[0]", settings) == wav
    assert validate_item("audio", wav, "inputs[0]", settings) == wav
    cases = [
        ("audio", _wav(2.5), 413, "2.5 s long"),
        ("audio", b"RIFF\x00\x00\x00\x00WAVEjunk", 422, "not a readable WAV"),
        ("audio", b"ID3 an mp3", 422, "not a readable WAV"),
        ("text", "x" * 11, 413, "11 characters"),
        ("text", "   ", 422, "empty"),
        ("text", b"\xff\xfe bad", 422, "not UTF-8"),
        ("text", 12, 422, "must be a string"),
        ("video", "AAAA", 422, "not a readable video"),
        ("point cloud", "AAAA", 422, "cannot read"),
    ]
    for kind, value, status, words in cases:
        with pytest.raises(ClientError) as info:
            validate_item(kind, value, "inputs[0]", settings)
        assert info.value.status == status and words in info.value.message, (kind, info.value.message)
    assert validate_item("text", "héllo", "inputs[0]", settings) == "héllo"
    assert validate_item("text", "héllo".encode(), "inputs[0]", settings) == "héllo"


def test_serve_cli_wires_settings_and_reports_errors(digits_run, monkeypatch, capsys):
    from modelforge.cli import main
    from modelforge.serve import app as app_module

    captured = {}
    monkeypatch.setattr(app_module, "run_server", lambda app, host, port, server, log_level: captured.update(
        app=app, host=host, port=port, server=server))
    monkeypatch.setenv("MODELFORGE_API_KEY", "from-env")
    argv = ["serve", f"digits={digits_run.directory}", "--port", "8123", "--max-batch-size", "4", "--max-wait-ms",
            "1.5", "--queue-size", "9", "--log-level", "warning"]
    assert main(argv) == 0
    settings = captured["app"].state.settings
    assert captured["host"] == "127.0.0.1" and captured["port"] == 8123  # loopback unless asked otherwise
    assert settings.api_key == "from-env"
    assert (settings.batch.max_batch_size, settings.batch.max_wait_ms, settings.batch.queue_size) == (4, 1.5, 9)
    assert list(captured["app"].state.models) == ["digits"]
    assert settings.request_timeout == 60 and captured["server"].shutdown_timeout == 30  # the defaults
    assert settings.allowed_hosts is None  # a key is set: the key guards the server, not the Host check

    monkeypatch.delenv("MODELFORGE_API_KEY")
    argv = ["serve", str(digits_run.directory), "--request-timeout", "5", "--shutdown-timeout", "2",
            "--header-timeout", "3", "--body-timeout", "4", "--keep-alive-timeout", "1", "--limit-concurrency", "7",
            "--max-explains", "3", "--allowed-hosts", "models.example:8000"]
    assert main(argv) == 0
    settings, server = captured["app"].state.settings, captured["server"]
    assert settings.request_timeout == 5 and settings.batch.max_explains == 3
    assert settings.allowed_hosts == ("127.0.0.1", "localhost", "::1", "models.example")
    assert (server.shutdown_timeout, server.header_timeout, server.body_timeout) == (2, 3, 4)
    assert (server.keep_alive_timeout, server.limit_concurrency) == (1, 7)

    assert main(["serve", "/nonexistent/run"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["serve", str(digits_run.directory), "--max-batch-size", "0"])
    assert info.value.code == 2
