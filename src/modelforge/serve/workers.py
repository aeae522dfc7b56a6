"""``modelforge serve --workers N``: N server processes on one port, each with its own models and batchers.

One Python process serves from one core at a time (the GIL), however many cores the machine has. Each worker is
the whole single-process server (``serve.app.serve``: the same limits, guards, deadlines and drain), listening on
its own socket bound with ``SO_REUSEPORT``, so the kernel spreads new connections over the workers. The parent
process only starts the workers and passes signals on: a first SIGTERM/SIGINT makes every worker drain, a second
makes them exit at once. Each worker runs in a process group of its own, so that a Ctrl-C in a terminal reaches
the workers once (through the parent), not twice. If a worker dies, the others are stopped and the exit status
says so.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger("modelforge.serve")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other processes of this user can bind to the same address too."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker process needs to serve (every field pickles, for the ``spawn`` start method)."""

    runs: tuple[str, ...]
    host: str
    port: int
    settings: Any  # ServeSettings
    log_level: str
    server: Any  # ServerSettings
    allowed_hosts: tuple[str, ...]


def _worker(serve: Callable[..., int], spec: WorkerSpec) -> None:
    os.setpgrp()  # signals come from the parent only (see the module docstring)
    serve(spec.runs, spec.host, spec.port, spec.settings, spec.log_level, spec.server, spec.allowed_hosts,
          reuse_port=True)


def serve_workers(serve: Callable[..., int], count: int, runs: Sequence[str | Path], host: str, port: int,
                  settings: Any, log_level: str, server: Any, allowed_hosts: Sequence[str]) -> int:
    """Run ``count`` workers, each calling ``serve`` (``serve.app.serve``, passed in: this module is below the app),
    until a signal; returns 0 when every worker stopped cleanly, else 1."""
    spec = WorkerSpec(tuple(str(r) for r in runs), host, port, settings, log_level, server, tuple(allowed_hosts))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no torch thread pools forked
    workers = [context.Process(target=_worker, args=(serve, spec), name=f"modelforge-worker-{i}")
               for i in range(count)]
    for worker in workers:
        worker.start()
    signals = {"count": 0}

    def forward(sig: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, sig)

    original = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while any(worker.is_alive() for worker in workers):
            failed = [w for w in workers if w.exitcode not in (None, 0)]
            if failed and not signals["count"]:
                log.error("worker %s exited with status %s: stopping the others", failed[0].name, failed[0].exitcode)
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
    finally:
        for sig, handler in original.items():
            signal.signal(sig, handler)
    return 0 if all(worker.exitcode == 0 for worker in workers) else 1
