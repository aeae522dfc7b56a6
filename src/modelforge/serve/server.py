"""uvicorn, hardened for clients that are slow or many: connection limits, read deadlines and a drain deadline.

- ``limit_concurrency``: connections plus requests in progress; above it uvicorn answers 503 at once.
- Slow clients (slowloris): uvicorn's h11 protocol has no deadline for reading a request, so ``GuardedH11Protocol``
  closes a connection whose request headers are not complete ``header_timeout`` seconds after its first byte (or
  after the connection opened), or whose body is not complete ``body_timeout`` seconds after its headers, with a
  JSON 408 when no answer has started. Idle kept-alive connections close after ``keep_alive_timeout`` (uvicorn's).
- Requests the HTTP layer itself cannot parse get a JSON 400, like every other error of this server.
- Shutdown: SIGTERM or SIGINT stops accepting connections and lets requests in progress finish for at most
  ``shutdown_timeout`` seconds; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("modelforge.serve")


@dataclass(frozen=True)
class ServerSettings:
    """Connection-level limits; the defaults suit a small server on a private network."""

    limit_concurrency: int = 100
    keep_alive_timeout: float = 5.0
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    shutdown_timeout: float = 30.0
    max_header_bytes: int = 16 * 1024  # h11's limit for a request line plus headers

    def __post_init__(self) -> None:
        timeouts = (self.keep_alive_timeout, self.header_timeout, self.body_timeout, self.shutdown_timeout)
        if self.limit_concurrency < 1 or min(timeouts) <= 0 or self.max_header_bytes < 1024:
            raise ValueError("limit_concurrency must be ≥ 1, timeouts > 0 and max_header_bytes ≥ 1024")


def _raw_json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nconnection: close\r\n"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode("ascii") + body


class GuardedConfig(uvicorn.Config):
    """uvicorn's config plus the read deadlines ``GuardedH11Protocol`` reads from it."""

    def __init__(self, app: Any, settings: ServerSettings, **kwargs: Any):
        super().__init__(app, http=GuardedH11Protocol, limit_concurrency=settings.limit_concurrency,
                         timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
                         # the app answers what is left at shutdown_timeout; uvicorn cancels the rest 1 s later
                         timeout_graceful_shutdown=settings.shutdown_timeout + 1,  # type: ignore[arg-type]
                         h11_max_incomplete_event_size=settings.max_header_bytes, **kwargs)
        self.header_timeout, self.body_timeout = settings.header_timeout, settings.body_timeout


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request's headers, then its body."""

    def __init__(self, config: GuardedConfig, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading = ""  # "headers", "body" or "" (not reading a request)

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
            self.transport.write(_raw_json_response(408, "Request Timeout", f"request {what} not received in time"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse (bad request line, oversized headers): JSON, then close."""
        self.transport.write(_raw_json_response(400, "Bad Request", "invalid HTTP request"))
        self.transport.close()


class DrainingServer(uvicorn.Server):
    """A first SIGTERM/SIGINT drains (for at most the shutdown timeout); a second one exits at once.

    At the deadline ``on_deadline`` answers the requests still waiting for a model (503, JSON); uvicorn cancels
    whatever is left a second later.
    """

    def __init__(self, config: GuardedConfig, drain_s: float, on_deadline: Callable[[], None] | None = None):
        super().__init__(config)
        self.drain_s, self.on_deadline = drain_s, on_deadline

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        deadline = asyncio.get_running_loop().call_later(self.drain_s, self.on_deadline or (lambda: None))
        try:
            await super().shutdown(sockets)
        finally:
            deadline.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            log.warning("second signal: exiting without waiting for requests in progress")
            self.force_exit = True
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, without re-raising the signal afterwards: a signal means stop serving, and ``serve`` returns."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _abandon_all(app: Any) -> Callable[[], None]:
    def abandon() -> None:
        for model in getattr(app.state, "models", {}).values():
            model.batcher.abandon()

    return abandon


def build_server(app: Any, host: str, port: int, settings: ServerSettings, log_level: str = "info",
                 access_log: bool = True) -> DrainingServer:
    """The server for ``create_app``'s app (its models' waiting requests are answered at the drain deadline)."""
    config = GuardedConfig(app, settings, host=host, port=port, log_level=log_level, access_log=access_log)
    return DrainingServer(config, settings.shutdown_timeout, _abandon_all(app))


def run_server(app: Any, host: str, port: int, settings: ServerSettings, log_level: str = "info",
               sock: socket.socket | None = None) -> None:
    """Serve until a signal; returns after the drain. Model calls still running then cannot be interrupted (a
    forward pass holds its thread, which the interpreter would wait for at exit), so the process exits at once.
    ``sock``: an already bound socket to listen on (a worker of ``serve.workers``) instead of binding host:port."""
    server = build_server(app, host, port, settings, log_level)
    server.run(sockets=[sock] if sock is not None else None)
    unfinished = sum(model.batcher.busy for model in getattr(app.state, "models", {}).values())
    if unfinished:
        log.warning("exiting with %d model call(s) unfinished", unfinished)
        logging.shutdown()
        os._exit(0)
