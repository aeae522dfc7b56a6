"""The server's limits (issue 15, items 5–7): a request timeout, no work for clients that left, explanations inside
the queue bound and unable to starve predictions, and connection-level deadlines for slow clients, checked with
raw sockets against the real uvicorn server on 127.0.0.1 (every wait is bounded)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
from fake_models import FakeTextModel, fake_app
from serve_helpers import served

from modelforge.serve.batching import BatchSettings
from modelforge.serve.server import ServerSettings

FAST = ServerSettings(header_timeout=0.5, body_timeout=0.5, keep_alive_timeout=1.0, shutdown_timeout=2.0)


def _post(base: str, path: str, texts: list[str], timeout: float = 10.0, **kwargs) -> httpx.Response:
    return httpx.post(base + path, json={"inputs": texts}, timeout=timeout, **kwargs)


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (or ``limit_s`` passes), and when it closed."""
    start, data = time.monotonic(), b""
    sock.settimeout(0.1)
    while time.monotonic() - start < limit_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


# ---- item 5: request timeout and cancellation ---------------------------------------------------------------------
def test_a_request_past_its_timeout_is_504():
    app = fake_app(FakeTextModel(delay=1.5), request_timeout=0.3)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            start = time.monotonic()
            response = await http.post("/models/fake/predict", json={"inputs": ["slow"]})
            took = time.monotonic() - start
        await app.state.models["fake"].batcher.stop()
        return response, took

    response, took = asyncio.run(main())
    assert response.status_code == 504 and "0.3 s request timeout" in response.json()["error"]
    assert took < 1.2


def _wait_for(condition, limit_s: float = 10) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_inputs_of_clients_that_disconnected_never_reach_the_model():
    model = FakeTextModel(delay=2.0)
    app = fake_app(model)
    stats = app.state.models["fake"].batcher.stats
    with served(app, FAST) as base:
        first = threading.Thread(target=_post, args=(base, "/models/fake/predict", ["first"]))
        first.start()
        _wait_for(lambda: model.seen() == ["first"])  # "first" is running: the next requests queue behind it
        abandoned = []
        for i in range(5):
            sock = _connect(base)
            body = json.dumps({"inputs": [f"abandoned-{i}"]}).encode()
            sock.sendall(b"POST /models/fake/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            abandoned.append(sock)
        _wait_for(lambda: stats.requests == 6)  # their inputs are queued
        for sock in abandoned:
            sock.close()
        first.join(timeout=10)
        last = _post(base, "/models/fake/predict", ["last"])
    assert last.status_code == 200
    assert model.seen() == ["first", "last"]


# ---- item 6: explanations obey the queue bound and cannot starve predict -------------------------------------------
def test_explanations_are_bounded_and_predict_is_not_starved():
    model = FakeTextModel(explain_delay=1.5)
    app = fake_app(model, BatchSettings(max_batch_size=4, max_wait_ms=0, queue_size=4, max_explains=2))

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as http:
            explains = [asyncio.create_task(http.post("/models/fake/explain", json={"inputs": [f"e{i}"]}))
                        for i in range(40)]
            await asyncio.sleep(0.1)
            start = time.monotonic()
            predicted = await http.post("/models/fake/predict", json={"inputs": ["tiny"]})
            waited = time.monotonic() - start
            explained = await asyncio.gather(*explains)
        await app.state.models["fake"].batcher.stop()
        return explained, predicted, waited

    explained, predicted, waited = asyncio.run(main())
    statuses = [r.status_code for r in explained]
    assert statuses.count(200) == 2 and statuses.count(503) == 38, statuses
    assert next(r for r in explained if r.status_code == 503).headers["Retry-After"] == "1"
    assert predicted.status_code == 200
    assert waited < 2.5  # behind the one explanation running (1.5 s), not behind both (3 s) or forty


# ---- item 7: slow clients, connection limits, the key before the body ---------------------------------------------
def test_slow_headers_are_cut_off():
    with served(fake_app(FakeTextModel()), FAST) as base:
        sock = _connect(base)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start, closed = time.monotonic(), False
        while time.monotonic() - start < 5 and not closed:  # one header line every 0.1 s, never the blank line
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            time.sleep(0.1)
        data, _ = _read_until_closed(sock, 1)
        took = time.monotonic() - start
        sock.close()
    assert closed or data, "the slow client was never cut off"
    assert took < 2.5
    if data:
        assert data.startswith(b"HTTP/1.1 408") and b'{"error": "request headers not received in time"}' in data


def test_a_silent_connection_is_closed():
    with served(fake_app(FakeTextModel()), FAST) as base:
        sock = _connect(base)
        data, took = _read_until_closed(sock, 5)
        sock.close()
    assert took < 2 and data.startswith(b"HTTP/1.1 408")


def test_a_slow_body_is_cut_off():
    with served(fake_app(FakeTextModel()), FAST) as base:
        sock = _connect(base)
        sock.sendall(b"POST /models/fake/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"inputs\": [")
        data, took = _read_until_closed(sock, 5)
        sock.close()
    assert took < 2 and data.startswith(b"HTTP/1.1 408") and b"request body not received in time" in data


def test_the_api_key_is_checked_before_the_body_is_read():
    with served(fake_app(FakeTextModel(), api_key="s3cret"), FAST) as base:
        sock = _connect(base)
        sock.sendall(b"POST /models/fake/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 8000000\r\n\r\n")  # the body never comes: the answer must not wait for it
        data, took = _read_until_closed(sock, 5)
        sock.close()
    assert data.startswith(b"HTTP/1.1 401") and b"API key" in data
    assert took < 0.4  # before the body deadline, which would otherwise be the first thing to answer


def test_a_malformed_request_gets_a_json_400():
    with served(fake_app(FakeTextModel()), FAST) as base:
        sock = _connect(base)
        sock.sendall(b"NOT A REQUEST LINE\r\n\r\n")
        data, _ = _read_until_closed(sock, 5)
        sock.close()
    assert data.startswith(b"HTTP/1.1 400") and b"application/json" in data
    assert data.endswith(b'{"error": "invalid HTTP request"}')


def test_connections_over_the_limit_get_503():
    settings = ServerSettings(limit_concurrency=2, header_timeout=5)
    with served(fake_app(FakeTextModel()), settings) as base:
        idle = [_connect(base) for _ in range(2)]
        time.sleep(0.2)
        response = httpx.get(base + "/health", timeout=5)
        for sock in idle:
            sock.close()
    assert response.status_code == 503


def test_keep_alive_idle_connections_close():
    with served(fake_app(FakeTextModel()), FAST) as base:
        sock = _connect(base)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data, took = _read_until_closed(sock, 5)
        sock.close()
    assert data.startswith(b"HTTP/1.1 200") and 0.8 < took < 2.5
