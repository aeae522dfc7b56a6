"""uvicorn, hardened for clients that are slow or many: connection limits, read deadlines and a drain deadline.

- ``limit_concurrency``: connections plus requests in progress; above it uvicorn answers 503 at once.
- Slow clients (slowloris): uvicorn's protocols have no deadline for reading a request, so the guarded ones
  (``serve.protocols``: httptools when installed, else h11) close a connection whose request headers are not
  complete ``header_timeout`` seconds after its first byte (or after the connection opened), or whose body is not
  complete ``body_timeout`` seconds after its headers, with a JSON 408 when no answer has started. Idle kept-alive
  connections close after ``keep_alive_timeout`` (uvicorn's). Request line + headers over ``max_header_bytes``: 400.
- Requests the HTTP layer itself cannot parse get a JSON 400, like every other error of this server.
- Shutdown: SIGTERM or SIGINT stops accepting connections and lets requests in progress finish for at most
  ``shutdown_timeout`` seconds; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from modelforge.serve.protocols import GuardedH11Protocol, GuardedHttpToolsProtocol

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


class GuardedConfig(uvicorn.Config):
    """uvicorn's config with the guarded protocol (httptools when installed, else h11) and the read deadlines and
    header size limit it reads from the config."""

    def __init__(self, app: Any, settings: ServerSettings, **kwargs: Any):
        super().__init__(app, http=GuardedHttpToolsProtocol or GuardedH11Protocol,
                         limit_concurrency=settings.limit_concurrency,
                         timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
                         # the app answers what is left at shutdown_timeout; uvicorn cancels the rest 1 s later
                         timeout_graceful_shutdown=settings.shutdown_timeout + 1,  # type: ignore[arg-type]
                         h11_max_incomplete_event_size=settings.max_header_bytes, **kwargs)
        self.header_timeout, self.body_timeout = settings.header_timeout, settings.body_timeout
        self.max_header_bytes = settings.max_header_bytes


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
