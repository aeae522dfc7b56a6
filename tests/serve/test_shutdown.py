"""Shutdown (issue 15, item 8): SIGTERM drains requests in progress for at most ``shutdown_timeout`` seconds, and a
second signal exits at once. The server runs in a subprocess (signals go to a whole process) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import free_port

HERE = Path(__file__).parent
SERVER = """
import sys
sys.path.insert(0, {here!r})
from fake_models import FakeTextModel, fake_app
from modelforge.serve.server import ServerSettings, run_server
run_server(fake_app(FakeTextModel(delay={delay})), "127.0.0.1", {port}, ServerSettings(shutdown_timeout={drain}),
           log_level="warning")
print("returned", flush=True)
"""


def _start(delay: float, drain: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = SERVER.format(here=str(HERE), delay=delay, port=port, drain=drain)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited early: {process.communicate()[1].decode()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("the server did not start within 60 s")


def _request_in_background(base: str) -> dict:
    answer: dict = {}

    def post() -> None:
        try:
            answer["status"] = httpx.post(base + "/models/fake/predict", json={"inputs": ["x"]}, timeout=60).status_code
        except httpx.HTTPError as exc:
            answer["error"] = type(exc).__name__

    threading.Thread(target=post, daemon=True).start()
    time.sleep(0.5)  # the model is now busy with it
    return answer


def _wait_exit(process: subprocess.Popen, limit_s: float) -> float:
    start = time.monotonic()
    try:
        process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"still running {limit_s} s after the signal")
    return time.monotonic() - start


def test_sigterm_lets_a_request_in_progress_finish():
    process, base = _start(delay=1.5, drain=30)
    answer = _request_in_background(base)
    process.send_signal(signal.SIGTERM)
    took = _wait_exit(process, 20)
    assert answer == {"status": 200} and took >= 0.8
    assert process.returncode == 0 and b"returned" in process.stdout.read()


def test_the_drain_stops_at_the_shutdown_timeout():
    process, base = _start(delay=30, drain=1)
    answer = _request_in_background(base)
    process.send_signal(signal.SIGTERM)
    took = _wait_exit(process, 20)
    assert took < 6  # 1 s drain, then out without waiting for the 30 s forward pass
    deadline = time.monotonic() + 5
    while not answer and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answer == {"status": 503}  # told, in JSON, that the server is shutting down
    log = process.stderr.read()
    assert b"unfinished" in log and b"Traceback" not in log


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_exits_at_once(second):
    process, base = _start(delay=30, drain=60)
    _request_in_background(base)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None  # still draining
    process.send_signal(second)
    assert _wait_exit(process, 20) < 4
