"""The HTTP protocol the server runs: httptools' C parser when installed (a fraction of h11's CPU per request), with
the same guards as the h11 one — here the request line + header size limit, which h11 enforces itself and the
httptools protocol counts; the read deadlines are covered for whichever protocol runs by test_limits.py."""

from __future__ import annotations

import socket

import httpx
import pytest
from fake_models import FakeTextModel, fake_app
from serve_helpers import served

from modelforge.serve.protocols import GuardedHttpToolsProtocol
from modelforge.serve.server import GuardedConfig, ServerSettings

SMALL_HEADERS = ServerSettings(max_header_bytes=2048, header_timeout=2.0)


def _exchange(base: str, data: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_the_server_uses_httptools_when_installed():
    pytest.importorskip("httptools", reason="httptools is not installed: the server runs h11")
    config = GuardedConfig(fake_app(FakeTextModel()), ServerSettings())
    assert config.http is GuardedHttpToolsProtocol is not None


@pytest.mark.parametrize("header", [b"X-Big: " + b"a" * 3000, b"X-" + b"b" * 3000 + b": 1"])
def test_headers_over_the_limit_get_a_json_400(header):
    with served(fake_app(FakeTextModel()), SMALL_HEADERS) as base:
        data = _exchange(base, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 400") and data.endswith(b'{"error": "invalid HTTP request"}')
        long_url = _exchange(base, b"GET /health?" + b"q" * 3000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert long_url.startswith(b"HTTP/1.1 400")
        assert httpx.get(base + "/health", headers={"X-Small": "a" * 500}).status_code == 200  # under it: served
