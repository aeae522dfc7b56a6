"""Serving load test: `modelforge serve` on loopback under a bounded load, with micro-batching off and on.

Trains a quick mnist-cnn run (or takes --run), starts the server as a subprocess for each mode, sends --requests
single-image predictions from --concurrency concurrent keep-alive clients, and prints latency percentiles,
throughput, errors and the server's CPU time per request for each mode, then the ratios (targets: 0 errors,
p99 ≤ 50 ms, batching ≥ 3× throughput). The default client is a minimal asyncio HTTP/1.1 client; `--client httpx`
uses httpx.AsyncClient, which spends more CPU per request than the server does, so on a small machine it measures
itself rather than the server.

    python benchmarks/serve_load.py [--run RUN] [--requests 5000] [--concurrency 50] [--client raw|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np


@dataclass
class LoadResult:
    sent: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    server_cpu_ms: float = float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    @property
    def throughput(self) -> float:
        return (self.sent - self.errors) / self.seconds if self.seconds > 0 else 0.0


def quick_run(recipe: str, steps: int, directory: Path) -> Path:
    import modelforge

    overrides = [f"train.max_steps={steps}", "train.progress=off", "data.limit=4096", "data.shift=0"]
    run = modelforge.train(recipe, overrides, run_dir=directory)
    print(f"trained {recipe} for {steps} steps: test_accuracy {run.metrics.get('test_accuracy', float('nan')):.4f}")
    return run.directory


def digit_png(run_dir: Path) -> str:
    """A 28×28 digit as base64 PNG: the first MNIST test image when available, else a drawn stroke."""
    from PIL import Image

    try:
        from modelforge.data.builtin.mnist import load_mnist

        pixels = load_mnist()["test_images"][0]
    except Exception:  # any dataset problem: the load test only needs a valid image
        pixels = np.zeros((28, 28), dtype=np.uint8)
        pixels[4:24, 13:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run_dir: Path, port: int, batch_size: int, wait_ms: float, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "modelforge", "serve", str(run_dir), "--port", str(port),
               "--max-batch-size", str(batch_size), "--max-wait-ms", str(wait_ms), "--queue-size", "4096",
               "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start within 120 s")


async def send_load(url: str, payload: dict, total: int, concurrency: int, max_seconds: float,
                    client: str = "httpx") -> LoadResult:
    """``concurrency`` clients each send one request at a time until ``total`` are sent or time runs out."""
    latencies: list[float] = []
    errors = sent = 0
    deadline = time.perf_counter() + max_seconds
    body = json.dumps(payload).encode()

    async def worker(post) -> None:
        nonlocal errors, sent
        while sent < total and time.perf_counter() < deadline:
            sent += 1
            start = time.perf_counter()
            try:
                ok = await post() == 200
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
            latencies.append((time.perf_counter() - start) * 1000)
            errors += not ok

    started = time.perf_counter()
    if client == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:

            async def post() -> int:
                return (await http.post(url, content=body, headers=headers)).status_code

            await asyncio.gather(*(worker(post) for _ in range(concurrency)))
    else:
        connections = [RawConnection(url, body) for _ in range(concurrency)]
        await asyncio.gather(*(worker(connection.post) for connection in connections))
        for connection in connections:
            connection.close()
    return LoadResult(sent, errors, time.perf_counter() - started, np.array(latencies))


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the same request bytes each time, and only the
    status line and Content-Length read back. Its cost per request is a small fraction of the server's, so the
    load generator does not become the bottleneck on a small machine (httpx's AsyncClient costs more CPU per
    request than the server it measures)."""

    def __init__(self, url: str, body: bytes):
        parsed = httpx.URL(url)
        self.host, self.port = parsed.host, parsed.port
        self.request = (f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(self.request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await self.reader.readexactly(length)
            return status
        except Exception:
            self.close()  # a broken connection is reopened by the next request
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def measure(run_dir: Path, name: str, batch_size: int, wait_ms: float, payload: dict, args) -> LoadResult:
    port = free_port()
    server = start_server(run_dir, port, batch_size, wait_ms, args.threads)
    try:
        model = httpx.get(f"http://127.0.0.1:{port}/models").json()["models"][0]["name"]
        url = f"http://127.0.0.1:{port}/models/{model}/predict"
        asyncio.run(send_load(url, payload, args.warmup, args.concurrency, 60, args.client))  # warm-up: not measured
        cpu_before = process_cpu_seconds(server.pid)
        result = asyncio.run(send_load(url, payload, args.requests, args.concurrency, args.max_seconds, args.client))
        cpu_used = process_cpu_seconds(server.pid) - cpu_before
        stats = httpx.get(f"http://127.0.0.1:{port}/models").json()["models"][0]["batching"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    mean_batch = stats["items"] / max(1, stats["batches"])
    print(f"{name}_requests: {result.sent}")
    print(f"{name}_errors: {result.errors}")
    print(f"{name}_throughput_rps: {result.throughput:.1f}")
    for q in (50, 95, 99):
        print(f"{name}_p{q}_ms: {result.percentile(q):.2f}")
    print(f"{name}_mean_batch: {mean_batch:.2f}")
    result.server_cpu_ms = 1000 * cpu_used / max(1, result.sent)
    print(f"{name}_server_cpu_ms_per_request: {result.server_cpu_ms:.2f}")
    return result


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): unlike throughput, it does not depend on how much of a
    shared machine the server was given, so it shows what batching saves even on a busy machine."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing image-classification run (default: train mnist-cnn)")
    parser.add_argument("--recipe", default="mnist-cnn")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=120, help="per mode: stop sending after this long")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="load generator: httpx.AsyncClient, or a minimal asyncio HTTP/1.1 client (cheaper)")
    args = parser.parse_args()

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or quick_run(args.recipe, args.train_steps, Path(tmp) / args.recipe)
        payload = {"inputs": [digit_png(run_dir)]}
        print(f"load: {args.requests} requests, {args.concurrency} concurrent {args.client} clients, 1 image each")
        off = measure(run_dir, "batching_off", 1, 0, payload, args)
        on = measure(run_dir, "batching_on", args.max_batch_size, args.max_wait_ms, payload, args)
    ratio = on.throughput / off.throughput if off.throughput else float("nan")
    print(f"throughput_ratio_on_vs_off: {ratio:.2f}")
    print(f"server_cpu_per_request_ratio_off_vs_on: {off.server_cpu_ms / on.server_cpu_ms:.2f}")
    checks = {"errors == 0": off.errors == 0 and on.errors == 0, "batching_on p99 <= 50 ms": on.percentile(99) <= 50,
              "throughput ratio >= 3": ratio >= 3}
    for name, ok in checks.items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
