"""Requests that once got a 500 (issue 15, items 1–4), the HTTP conformance of every answer (item 9) and the Host
and Origin checks against DNS rebinding and cross-site posts (item 10): each answer is a JSON 4xx saying what is
wrong."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tiny_runs import keyword_run, sentiment_run, wav_bytes

from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings

SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=4, max_wait_ms=0))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]


@pytest.fixture(scope="module")
def client(digits_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-requests")
    app = create_app([f"digits={digits_run.directory}", f"text={sentiment_run(root)}", f"audio={keyword_run(root)}"],
                     SETTINGS)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_broken_chunk() -> bytes:
    """A valid PNG header and IHDR, its pixel data split over two chunks, the second one's type garbled (with a
    CRC valid for what it holds): Pillow reads the header, then raises SyntaxError while decoding."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)).save(buffer, format="PNG")
    png = buffer.getvalue()
    start = png.index(b"IDAT")
    idat = png[start + 4 : start + 4 + struct.unpack(">I", png[start - 4 : start])[0]]
    half = len(idat) // 2
    return png[: start - 4] + _chunk(b"IDAT", idat[:half]) + _chunk(b"\xaf;\xef\xa7", idat[half:]) + _chunk(b"IEND",
                                                                                                            b"")


def gif_of_width_zero() -> bytes:
    """A GIF whose image descriptor declares a frame 0 pixels wide (Pillow: ValueError while decoding)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="GIF")
    gif = bytearray(buffer.getvalue())
    descriptor = gif.index(b"\x2c", 13)  # after the header and logical screen descriptor
    gif[descriptor + 5 : descriptor + 7] = b"\x00\x00"
    return bytes(gif)


# ---- items 1 and 2: undecodable images, on predict and explain alike ---------------------------------------------
@pytest.mark.parametrize("route", ["predict", "explain"])
@pytest.mark.parametrize("image, words", [(png_with_broken_chunk, "SyntaxError"), (gif_of_width_zero, "ValueError")])
def test_an_image_that_breaks_the_decoder_is_422_on_predict_and_explain(client, route, image, words):
    data = image()
    assert_error(client.post(f"/models/digits/{route}", json={"inputs": [b64(data)]}), 422, "image", words)
    files = [("file", ("x.png", data, "image/png"))]
    assert_error(client.post(f"/models/digits/{route}", files=files), 422, "image")


def test_pillow_decode_errors_are_data_errors():
    from modelforge.core.errors import DataError
    from modelforge.tasks.vision.image_inputs import read_image_input, resized_from_bytes

    for data in (png_with_broken_chunk(), gif_of_width_zero()):
        with pytest.raises(DataError, match="not a readable image"):
            resized_from_bytes(data, 1, 8)
        with pytest.raises(DataError, match="not a readable image"):
            read_image_input(data)


# ---- items 2 and 4: lone surrogates in text ------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["predict", "explain"])
def test_a_lone_surrogate_is_named_on_predict_and_explain(client, route):
    body = b'{"inputs": ["good \\ud800 film"]}'
    response = client.post(f"/models/text/{route}", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 422, "inputs[0]", "lone surrogate", "U+D800", "character 5")


# ---- item 3: JSON the parser refuses -------------------------------------------------------------------------------
@pytest.mark.parametrize("route", ["predict", "explain"])
@pytest.mark.parametrize("body, words", [
    (b'{"inputs": ["a"], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
    (b'{"inputs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested too deeply"),
    (b'{"inputs": ["a"], "n": ' + b"9" * 5000 + b"}", "4300 digits"),
    (b'{"inputs": [' + b"7" * 4301 + b"]}", "4300 digits"),
])
def test_deep_nesting_and_huge_integers_are_400(client, route, body, words):
    response = client.post(f"/models/digits/{route}", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "not valid JSON", words)


# ---- item 9: HTTP conformance -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/health", "/", "/models"])
def test_head_answers_like_get_without_a_body(client, path):
    head, get = client.head(path), client.get(path)
    assert head.status_code == 200 == get.status_code
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


def test_a_404_does_not_echo_a_long_path(client):
    long_name = "x" * 60_000  # httpx's URL limit is 65,536 characters
    for response in (client.get("/" + long_name), client.post(f"/models/{long_name}/predict", json={"inputs": ["a"]}),
                     client.get(f"/models/{long_name}")):
        assert_error(response, 404)
        assert len(response.content) < 400


def test_openapi_declares_errors_security_and_min_items(digits_run):
    app = create_app([f"digits={digits_run.directory}"], ServeSettings(api_key="k"))
    schema = TestClient(app).get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    predict = schema["paths"]["/models/{name}/predict"]["post"]
    assert predict["security"] == [{"bearer": []}, {"apiKey": []}]
    assert {"400", "401", "404", "413", "415", "422", "503", "504"} <= set(predict["responses"])
    assert "501" in schema["paths"]["/models/{name}/explain"]["post"]["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]
    inputs = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]
    assert inputs["minItems"] == 1
    no_key = TestClient(create_app([f"digits={digits_run.directory}"], ServeSettings())).get("/openapi.json").json()
    assert "securitySchemes" not in no_key.get("components", {})


# ---- item 10: Host and Origin -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loopback_client(digits_run):
    settings = ServeSettings(allowed_hosts=("127.0.0.1", "localhost", "::1"))
    with TestClient(create_app([f"digits={digits_run.directory}"], settings), base_url="http://127.0.0.1:8000",
                    raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_foreign_host_header_is_refused(loopback_client):
    assert loopback_client.get("/health").status_code == 200
    assert loopback_client.get("/health", headers={"Host": "localhost:8000"}).status_code == 200
    assert loopback_client.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example"):
        response = loopback_client.post("/models/digits/predict", json={"inputs": ["a"]}, headers={"Host": host})
        assert_error(response, 400, "not served here", "--allowed-hosts")


def test_a_cross_origin_form_post_is_refused(loopback_client):
    files = [("text", (None, "hello"))]
    response = loopback_client.post("/models/digits/predict", files=files, headers={"Origin": "http://evil.example"})
    assert_error(response, 403, "cross-origin")
    same_site = loopback_client.get("/models", headers={"Origin": "http://127.0.0.1:8000"})
    assert same_site.status_code == 200


def test_allowed_hosts_follow_the_bound_address():
    from modelforge.serve.guards import allowed_hosts_for

    assert allowed_hosts_for("127.0.0.1") == ("127.0.0.1", "localhost", "::1")
    assert allowed_hosts_for("10.0.0.5", ["Models.Example:8000"]) == ("10.0.0.5", "models.example")
    assert allowed_hosts_for("0.0.0.0") is None  # any name reaches a wildcard bind: nothing to check against
    assert allowed_hosts_for("0.0.0.0", ["models.example"]) == ("0.0.0.0", "models.example")


def test_a_multipart_body_over_the_field_limit_is_413(client):
    fields = [("text", (None, f"review {i}")) for i in range(SETTINGS.max_inputs + 1)]
    assert_error(client.post("/models/text/predict", files=fields), 413, "multipart body", "Too many fields")


# ---- found by the fuzz test: a WAV at an odd sample rate -------------------------------------------------------
@pytest.mark.parametrize("rate", [8001, 383_999])
def test_an_odd_sample_rate_is_resampled_without_a_huge_filter(client, rate):
    """383,999 Hz → 16 kHz exactly needs a 16000 × 384,000-phase filter bank (49 GB); such ratios are approximated."""
    response = client.post("/models/audio/predict", json={"inputs": [b64(wav_bytes(0.01, rate=rate))]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("rate", [999, 400_000])
def test_a_sample_rate_outside_what_is_read_is_422(client, rate):
    response = client.post("/models/audio/predict", json={"inputs": [b64(wav_bytes(0.01, rate=rate))]})
    assert_error(response, 422, "not a readable WAV", f"sample rate {rate} Hz")


def test_read_wav_approximates_odd_rates_and_refuses_absurd_ones(tmp_path):
    from modelforge.core.errors import DataError
    from modelforge.data.audio import read_wav

    path = tmp_path / "odd.wav"
    path.write_bytes(wav_bytes(0.5, rate=8001))
    assert abs(len(read_wav(path, 16000)) - 8000) <= 2  # about 0.5 s at 16 kHz
    path.write_bytes(wav_bytes(0.01, rate=400_000))
    with pytest.raises(DataError, match="400000 Hz"):
        read_wav(path, 16000)


def test_a_wav_chunk_running_past_the_end_is_422(client):
    """Found by the fuzz test: ``wave`` raises RuntimeError skipping a chunk longer than the data (a 500 before)."""
    chunk = b"JUNK" + struct.pack("<I", 1000) + b"x" * 10
    data = b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WAVE" + chunk
    assert_error(client.post("/models/audio/predict", json={"inputs": [b64(data)]}), 422, "not a readable WAV",
                 "runs past the end")


# ---- item 13: explain's query options are checked, never silently ignored -----------------------------------------
@pytest.mark.parametrize("query, words", [
    ("steps=-1", "steps"),
    ("steps=1", "steps"),
    ("steps=abc", "steps"),
    (f"steps={10**6}", "steps"),
    ("stpes=8", "unknown query option 'stpes'"),
])
def test_explain_query_options_are_checked(client, query, words):
    response = client.post(f"/models/text/explain?{query}", json={"inputs": ["a good film"]})
    assert_error(response, 422, words)


def test_explain_honours_a_valid_steps_option(client):
    response = client.post("/models/text/explain?steps=4&method=integrated_gradients", json={"inputs": ["a good film"]})
    assert response.status_code == 200, response.text
    assert len(response.json()["explanations"]) == 1
