"""uvicorn's HTTP/1.1 protocols with read deadlines, a header size limit and JSON errors (used by ``serve.server``).

Neither uvicorn protocol has a deadline for reading a request, so a slow client (slowloris) could hold a connection
for ever. Both guarded protocols close a connection whose request headers are not complete ``header_timeout``
seconds after its first byte (or after the connection opened), or whose body is not complete ``body_timeout``
seconds after its headers, with a JSON 408 when no answer has started; a request they cannot parse gets a JSON 400.

``GuardedHttpToolsProtocol`` (llhttp, through httptools) is what the server uses when httptools is installed: it
parses a request in C and costs a fraction of ``GuardedH11Protocol``'s (pure-Python h11) CPU per request, which for
a small model is a large part of the server's work. h11 enforces the header size limit itself
(``h11_max_incomplete_event_size``); with httptools the request line and headers are counted here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("modelforge.serve")


def raw_json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


class ReadDeadlines:
    """The deadline timer both protocols share: ``_arm("headers" | "body", seconds)``, ``_disarm()``."""

    config: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: Any
    cycle: Any

    def _init_deadlines(self) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = ""  # "headers", "body" or "" (not reading a request)

    def _arm(self, reading: str, seconds: float) -> None:
        self._disarm()
        self._reading = reading
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._reading = None, ""

    def _expired(self) -> None:
        what, self._deadline, self._reading = self._reading, None, ""
        if self.transport.is_closing():
            return
        log.warning("closing a connection from %s: request %s not received in time", self.client, what)
        answered = self.cycle is not None and self.cycle.response_started and what == "body"
        if not answered:
            self.transport.write(raw_json_response(408, "Request Timeout", f"request {what} not received in time"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (bad request line, oversized headers): JSON, then close."""
        self.transport.write(raw_json_response(400, "Bad Request", "invalid HTTP request"))
        self.transport.close()


class GuardedH11Protocol(ReadDeadlines, H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request's headers, then its body."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self._init_deadlines()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.config.header_timeout)

    def data_received(self, data: bytes) -> None:
        if not self._reading and self.conn.their_state is h11.IDLE:  # a next request on a kept-alive connection
            self._arm("headers", self.config.header_timeout)
        super().data_received(data)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Move the deadline on as h11 reads: headers done → the body's deadline; body done → none."""
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._reading == "headers":
            self._arm("body", self.config.body_timeout)
        elif state is not h11.IDLE and state is not h11.SEND_BODY:
            self._disarm()


def _httptools_protocol() -> type | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed
        return None

    class GuardedHttpToolsProtocol(ReadDeadlines, HttpToolsProtocol):
        """uvicorn's httptools protocol with the read deadlines and a limit on request line + header bytes."""

        def __init__(self, config: Any, *args: Any, **kwargs: Any):
            super().__init__(config, *args, **kwargs)
            self._init_deadlines()
            self._in_message = False  # between the first byte of a request and its end
            self._header_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm("headers", self.config.header_timeout)

        def data_received(self, data: bytes) -> None:
            if not self._reading and not self._in_message:  # a next request on a kept-alive connection
                self._arm("headers", self.config.header_timeout)
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > self.config.max_header_bytes:
                raise ValueError("request line and headers over the limit")  # → HttpParserCallbackError → 400

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_message, self._header_bytes = True, 0

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm("body", self.config.body_timeout)

        def on_message_complete(self) -> None:
            self._in_message = False
            self._disarm()
            super().on_message_complete()

    return GuardedHttpToolsProtocol


GuardedHttpToolsProtocol = _httptools_protocol()
