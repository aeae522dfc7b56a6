"""The adaptive batch window (no waiting when the model is idle; what arrives while a batch runs is the next batch)
and ``modelforge serve --workers N`` (N processes on one port, each serving, all stopped by one SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import free_port
from test_batching import Recorder
from tiny_runs import image_run

from modelforge.serve.batching import BatchSettings, MicroBatcher

ADAPTIVE = BatchSettings(max_batch_size=8, max_wait_ms=2000, window="adaptive")


def test_a_lone_request_on_an_idle_model_does_not_wait_for_company():
    async def main():
        batcher = MicroBatcher(Recorder(), ADAPTIVE, "fake")
        start = time.perf_counter()
        result = await batcher.submit([1])
        elapsed = time.perf_counter() - start
        await batcher.stop()
        return result, elapsed

    result, elapsed = asyncio.run(main())
    assert result == [2] and elapsed < 0.5  # the fixed window would wait max_wait_ms (2 s) here


def test_requests_arriving_while_a_batch_runs_form_the_next_batch():
    model = Recorder(delay=0.3)

    async def main():
        batcher = MicroBatcher(model, ADAPTIVE, "fake")
        first = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.1)  # [0] is running now
        rest = await asyncio.gather(*(batcher.submit([i]) for i in range(1, 11)))
        await first
        await batcher.stop()
        return rest

    assert asyncio.run(main()) == [[2 * i] for i in range(1, 11)]
    assert model.batches == [[0], [1, 2, 3, 4, 5, 6, 7, 8], [9, 10]]  # capped at max_batch_size, in arrival order


def test_the_window_is_checked():
    with pytest.raises(ValueError, match="adaptive, fixed"):
        BatchSettings(window="sometimes")


def test_serve_cli_passes_window_runtime_and_workers(tmp_path, monkeypatch):
    from modelforge.cli import main
    from modelforge.serve import app as app_module

    captured = {}
    monkeypatch.setattr(app_module, "run_server", lambda app, host, port, server, log_level: captured.update(app=app))
    monkeypatch.setattr("modelforge.serve.workers.serve_workers",
                        lambda serve, count, *args: captured.update(workers=count) or 0)
    run = image_run(tmp_path)
    assert main(["serve", str(run), "--runtime", "torch", "--log-level", "warning"]) == 0
    settings = captured["app"].state.settings
    assert settings.batch.window == "adaptive" and settings.runtime == "torch"  # adaptive is the default
    assert main(["serve", str(run), "--batch-window", "fixed", "--workers", "3", "--log-level", "warning"]) == 0
    assert captured["workers"] == 3
    assert main(["serve", "/nonexistent/run", "--workers", "2"]) == 2  # checked before any worker starts


def test_two_workers_serve_on_one_port_and_stop_on_sigterm(tmp_path):
    run, port = image_run(tmp_path), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "modelforge", "serve", f"digits={run}", "--workers", "2", "--port", str(port),
               "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        children = []
        while len(children) < 2 or not _answers(base):
            assert server.poll() is None and time.monotonic() < deadline, server.communicate(timeout=5)[0]
            children = _children(server.pid)
            time.sleep(0.3)
        png = Path(run / "digit.png")
        _write_png(png)
        answers = [httpx.post(f"{base}/models/digits/predict", content=png.read_bytes(),
                              headers={"Content-Type": "image/png"}, timeout=30) for _ in range(8)]
        assert [r.status_code for r in answers] == [200] * 8
        assert len({r.text for r in answers}) == 1  # every worker serves the same model
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        assert not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in children)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _children(pid: int) -> list[int]:
    """Worker processes of the parent (multiprocessing's resource tracker is not one)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [p for p in pids if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _write_png(path: Path) -> None:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((16, 16), 200, dtype=np.uint8)).save(path)
