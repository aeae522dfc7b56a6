"""Serving load test: `modelforge serve` on loopback under a bounded load, against BentoML serving the same model.

Trains a quick mnist-cnn run (or takes --run) and exports it to ONNX, then for each mode starts a server as a
subprocess, sends --requests single-image predictions from --concurrency concurrent keep-alive clients and prints
latency percentiles, throughput, errors and the server's CPU time per request (its whole process tree), then the
ratios. Modes: modelforge with batching off (--max-batch-size 1), on (adaptive window), on with --runtime torch,
with --workers 2, and a raw image/png body instead of JSON; and BentoML (with --bentoml-python: a Python whose
environment has bentoml, torch and Pillow, e.g. a separate venv, since bentoml's dependencies would change the
project's) serving the same network as TorchScript behind its adaptive batching (@bentoml.api(batchable=True)),
with the same JSON request bytes (without --bentoml-python: $MODELFORGE_BENTOML_PYTHON, else the checkout's
.venv-bentoml made by `make bench-peers`, else this Python if it has bentoml; when none has it, one line says so and
the modelforge modes still run). --server-cpus / --client-cpus pin
the two sides with taskset.

Targets: 0 errors, server CPU per request ≤ 0.4 ms, p99 ≤ 50 ms at 50 clients, batching's p99 ≤ no batching's,
≥ 1.5× BentoML's throughput at equal or lower p99. The default client is a minimal asyncio HTTP/1.1 client;
`--client httpx` uses httpx.AsyncClient, which spends more CPU per request than the server does.

    python benchmarks/serve_load.py [--run RUN] [--requests 5000] [--concurrency 50] [--client raw|httpx]
        [--bentoml-python /work/bento-venv/bin/python] [--server-cpus 1] [--client-cpus 0] [--modes on,off,...]
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

MODES = ("off", "on", "on_torch", "workers2", "raw_png", "bentoml")
BENTOML_ENV = "MODELFORGE_BENTOML_PYTHON"  # where `modelforge bench` (no options) finds the BentoML peer


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


@dataclass
class Request:
    """What every client sends: the path and body bytes with their content type."""

    path: str
    body: bytes
    content_type: str = "application/json"


def quick_run(recipe: str, steps: int, directory: Path) -> Path:
    import modelforge

    overrides = [f"train.max_steps={steps}", "train.progress=off", "data.limit=4096", "data.shift=0"]
    run = modelforge.train(recipe, overrides, run_dir=directory)
    print(f"trained {recipe} for {steps} steps: test_accuracy {run.metrics.get('test_accuracy', float('nan')):.4f}")
    return run.directory


def digit_png(run_dir: Path) -> bytes:
    """A 28×28 digit as PNG bytes: the first MNIST test image when available, else a drawn stroke."""
    from PIL import Image

    try:
        from modelforge.data.builtin.mnist import load_mnist

        pixels = load_mnist()["test_images"][0]
    except Exception:  # any dataset problem: the load test only needs a valid image
        pixels = np.zeros((28, 28), dtype=np.uint8)
        pixels[4:24, 13:16] = 255
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


def start_process(command: list[str], port: int, threads: int, env_extra: dict[str, str] | None = None,
                  limit_s: float = 180) -> subprocess.Popen:
    """Start a server and wait for GET /health (modelforge) or /readyz (BentoML) to answer 200."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited with {process.returncode}: {log.read()[-2000:]}")
        for path in ("/health", "/readyz"):
            try:
                if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
        time.sleep(0.3)
    stop(process)
    raise RuntimeError(f"server did not start within {limit_s:.0f} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def modelforge_server(run_dir: Path, port: int, args, batch_size: int, runtime: str = "auto",
                      workers: int = 1) -> subprocess.Popen:
    command = [sys.executable, "-m", "modelforge", "serve", str(run_dir), "--port", str(port),
               "--max-batch-size", str(batch_size), "--batch-window", "adaptive", "--queue-size", "4096",
               "--runtime", runtime, "--workers", str(workers), "--limit-concurrency", "1000",
               "--log-level", "warning"]
    return start_process(pinned(command, args.server_cpus), port, args.threads)


async def send_load(host: str, port: int, request: Request, total: int, concurrency: int, max_seconds: float,
                    client: str = "raw") -> LoadResult:
    """``concurrency`` clients each send one request at a time until ``total`` are sent or time runs out."""
    latencies: list[float] = []
    errors = sent = 0
    deadline = time.perf_counter() + max_seconds

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
        headers = {"Content-Type": request.content_type}
        url = f"http://{host}:{port}{request.path}"
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:

            async def post() -> int:
                return (await http.post(url, content=request.body, headers=headers)).status_code

            await asyncio.gather(*(worker(post) for _ in range(concurrency)))
    else:
        connections = [RawConnection(host, port, request) for _ in range(concurrency)]
        await asyncio.gather(*(worker(connection.post) for connection in connections))
        for connection in connections:
            connection.close()
    return LoadResult(sent, errors, time.perf_counter() - started, np.array(latencies))


class RawConnection:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: the same request bytes each time, and only the
    status line and Content-Length read back. Its cost per request is a small fraction of the server's, so the
    load generator does not become the bottleneck on a small machine (httpx's AsyncClient costs more CPU per
    request than the server it measures)."""

    def __init__(self, host: str, port: int, request: Request):
        self.host, self.port = host, port
        self.request = (f"POST {request.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                        f"Content-Type: {request.content_type}\r\nContent-Length: {len(request.body)}\r\n\r\n"
                        ).encode() + request.body
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


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (Linux /proc): the workers of --workers and
    BentoML's processes count too. Unlike throughput, it does not depend on how much of a shared machine the
    server was given."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pending.extend(int(child) for child in fh.read().split())
        except OSError:
            continue
    return total


def measure(name: str, server: subprocess.Popen, port: int, request: Request, args) -> LoadResult:
    try:
        asyncio.run(send_load("127.0.0.1", port, request, args.warmup, args.concurrency, 60, args.client))
        cpu_before = tree_cpu_seconds(server.pid)
        result = asyncio.run(send_load("127.0.0.1", port, request, args.requests, args.concurrency,
                                       args.max_seconds, args.client))
        cpu_used = tree_cpu_seconds(server.pid) - cpu_before
    finally:
        stop(server)
    result.server_cpu_ms = 1000 * cpu_used / max(1, result.sent)
    print(f"{name}_requests: {result.sent}")
    print(f"{name}_errors: {result.errors}")
    print(f"{name}_throughput_rps: {result.throughput:.1f}")
    for q in (50, 95, 99):
        print(f"{name}_p{q}_ms: {result.percentile(q):.2f}")
    print(f"{name}_server_cpu_ms_per_request: {result.server_cpu_ms:.3f}")
    return result


# ---- the BentoML peer -------------------------------------------------------------------------------------------
BENTO_SERVICE = '''
import base64, io, json, os
import bentoml, numpy as np, torch
from PIL import Image

SPEC = json.loads(open(os.environ["MNIST_SPEC"]).read())


@bentoml.service(workers=1, traffic={"timeout": 30, "max_concurrency": 1000})
class Mnist:
    def __init__(self) -> None:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.model = torch.jit.load(SPEC["model"]).eval()
        self.mean = torch.tensor(SPEC["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(SPEC["std"]).view(1, -1, 1, 1)

    def _decode(self, text: str) -> np.ndarray:
        with Image.open(io.BytesIO(base64.b64decode(text))) as img:
            size = (SPEC["image_size"], SPEC["image_size"])
            return np.asarray(img.convert("L").resize(size, Image.BILINEAR), dtype=np.uint8)[None]

    @bentoml.api(batchable=True, max_batch_size=SPEC["max_batch_size"], max_latency_ms=10000)
    def predict(self, inputs: list[str]) -> list[dict]:
        batch = torch.from_numpy(np.stack([self._decode(item) for item in inputs]))
        with torch.inference_mode():
            probs = self.model((batch.float() / 255 - self.mean) / self.std).softmax(-1)
        values, indices = probs.topk(5, dim=-1)
        out = []
        for row_v, row_i in zip(values.tolist(), indices.tolist()):
            top = [{"label": SPEC["labels"][i], "probability": round(p, 6)} for p, i in zip(row_v, row_i)]
            out.append({"label": top[0]["label"], "probability": top[0]["probability"], "top": top})
        return out
'''


def bento_files(run_dir: Path, directory: Path, max_batch_size: int) -> Path:
    """The same network as TorchScript, its preprocessing constants and the BentoML service file, in ``directory``."""
    import torch

    import modelforge

    predictor = modelforge.load(run_dir)
    state = predictor.task.state()
    example = next(iter(predictor.task.example_inputs(1).values()))
    with torch.inference_mode():
        torch.jit.trace(predictor.model.eval(), example).save(str(directory / "model.pt"))
    spec = {"model": str(directory / "model.pt"), "mean": state["mean"], "std": state["std"],
            "labels": state["labels"], "image_size": state["image_size"], "max_batch_size": max_batch_size}
    (directory / "spec.json").write_text(json.dumps(spec))
    (directory / "mnist_service.py").write_text(BENTO_SERVICE)
    return directory


def bento_server(python: str, directory: Path, port: int, args) -> subprocess.Popen:
    command = [python, "-m", "bentoml", "serve", "mnist_service:Mnist", "--port", str(port), "--host", "127.0.0.1",
               "--working-dir", str(directory)]
    env = {"MNIST_SPEC": str(directory / "spec.json"), "BENTOML_DO_NOT_TRACK": "True",
           "BENTOML_HOME": str(directory / "bentoml-home")}
    return start_process(pinned(command, args.server_cpus), port, args.threads, env)


def export_onnx(run_dir: Path) -> None:
    import modelforge

    result = modelforge.load(run_dir).export("onnx")
    print(f"exported {result.path} (max |onnxruntime - torch| {result.max_abs_diff:.1e})")


def compare_runtimes(run_dir: Path, sizes: tuple[int, ...] = (1, 8, 32), repeats: int = 200) -> None:
    """Milliseconds per forward pass of the run's network by batch size: PyTorch (inference_mode), PyTorch with
    channels-last tensors, and onnxruntime on the export (what ``serve.runtime`` chooses between)."""
    import copy

    import onnxruntime as ort
    import torch

    import modelforge
    from modelforge.artifacts.export import default_output

    predictor = modelforge.load(run_dir)
    model = predictor.model.eval()
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    session = ort.InferenceSession(str(default_output(Path(predictor.directory))), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1000

    example = next(iter(predictor.task.example_inputs(1).values()))
    for size in sizes:
        batch = example.repeat(size, *([1] * (example.dim() - 1)))
        batch_cl, array = batch.contiguous(memory_format=torch.channels_last), batch.numpy()
        with torch.inference_mode():
            plain = timed(lambda b=batch: model(b))
            cl = timed(lambda b=batch_cl: channels_last(b))
        onnx = timed(lambda a=array: session.run(None, {name: a}))
        print(f"forward_ms_batch{size}: torch {plain:.3f}, torch_channels_last {cl:.3f}, onnxruntime {onnx:.3f}")


def run_modes(run_dir: Path, png: bytes, args, work: Path) -> dict[str, LoadResult]:
    model = run_dir.resolve().parent.name if run_dir.name == "model" else run_dir.resolve().name  # as serve names it
    payload = json.dumps({"inputs": [base64.b64encode(png).decode()]}).encode()
    json_request = Request(f"/models/{model}/predict", payload)
    raw_request = Request(f"/models/{model}/predict", png, "image/png")
    results: dict[str, LoadResult] = {}
    for mode in args.modes:
        port = free_port()
        try:
            if mode == "bentoml":
                if not args.bentoml_python:
                    print("bentoml: not found (this Python has no bentoml; give --bentoml-python or set "
                          f"{BENTOML_ENV}); BentoML's figures and the ratios to it are not measured in this run")
                    continue
                server = bento_server(args.bentoml_python, bento_files(run_dir, work, args.max_batch_size), port, args)
                request = Request("/predict", json_request.body)
            else:
                batch = 1 if mode == "off" else args.max_batch_size
                server = modelforge_server(run_dir, port, args, batch, "torch" if mode == "on_torch" else "auto",
                                           2 if mode == "workers2" else 1)
                request = raw_request if mode == "raw_png" else json_request
        except RuntimeError as exc:
            print(f"{mode}: could not start the server: {str(exc).strip().splitlines()[-1][:300]}")
            continue
        results[mode] = measure(mode, server, port, request, args)
    return results


def report(results: dict[str, LoadResult]) -> None:
    on, off, bento = results.get("on"), results.get("off"), results.get("bentoml")
    if on and off:
        print(f"throughput_ratio_on_vs_off: {on.throughput / off.throughput:.2f}")
    if on and bento and bento.throughput:
        print(f"throughput_ratio_modelforge_vs_bentoml: {on.throughput / bento.throughput:.2f}")
        print(f"p99_ratio_modelforge_vs_bentoml: {on.percentile(99) / bento.percentile(99):.2f}")
        print(f"server_cpu_ratio_bentoml_vs_modelforge: {bento.server_cpu_ms / on.server_cpu_ms:.2f}")
    if on and bento and bento.throughput:  # the lines `modelforge bench` gathers into its summary
        print(f"table: serve MNIST req/s, batching on | {on.throughput:.0f} | BentoML {bento.throughput:.0f} | "
              f"{on.throughput / bento.throughput:.2f}x")
        print(f"table: serve MNIST p99 ms | {on.percentile(99):.0f} | BentoML {bento.percentile(99):.0f} | "
              f"{on.percentile(99) / bento.percentile(99):.2f}x")
    checks = {"errors == 0": all(r.errors == 0 for r in results.values())}
    if on:
        checks["batching_on p99 <= 50 ms"] = on.percentile(99) <= 50
        checks["server cpu per request <= 0.4 ms"] = on.server_cpu_ms <= 0.4
    if on and off:
        checks["batching_on p99 <= batching_off p99"] = on.percentile(99) <= off.percentile(99)
    if on and bento:
        checks[">= 1.5x bentoml throughput at <= its p99"] = (on.throughput >= 1.5 * bento.throughput
                                                              and on.percentile(99) <= bento.percentile(99))
    for name, ok in checks.items():
        print(f"target {name}: {'met' if ok else 'NOT met'}")


PEER_VENV = Path(__file__).resolve().parent.parent / ".venv-bentoml" / "bin" / "python"  # `make bench-peers`


def default_bentoml_python() -> str | None:
    """The BentoML peer's Python when none is given: $MODELFORGE_BENTOML_PYTHON, else the checkout's
    .venv-bentoml (`make bench-peers`), else this one if it has bentoml (so `modelforge bench`, which passes no
    options, measures the peer wherever it is installed)."""
    import importlib.util

    if os.environ.get(BENTOML_ENV):
        return os.environ[BENTOML_ENV]
    if PEER_VENV.is_file():
        return str(PEER_VENV)
    return sys.executable if importlib.util.find_spec("bentoml") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing image-classification run (default: train mnist-cnn)")
    parser.add_argument("--recipe", default="mnist-cnn")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=120, help="per mode: stop sending after this long")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the servers")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="load generator: httpx.AsyncClient, or a minimal asyncio HTTP/1.1 client (cheaper)")
    parser.add_argument("--modes", type=lambda text: text.split(","), default=list(MODES),
                        help=f"comma-separated, in order (default: {','.join(MODES)})")
    parser.add_argument("--bentoml-python", default=default_bentoml_python(),
                        help=f"a Python with bentoml, torch and Pillow (the BentoML peer; default: ${BENTOML_ENV}, "
                             "else this Python when it has bentoml)")
    parser.add_argument("--quick", action="store_true",
                        help="500 requests per mode after 50 warm-up ones, and a 50-step training run")
    parser.add_argument("--server-cpus", help="taskset CPU list for the servers (e.g. 1)")
    parser.add_argument("--client-cpus", help="CPU list for this load generator (e.g. 0)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.warmup, args.train_steps = min(args.requests, 500), min(args.warmup, 50), 50
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    if args.client_cpus:
        os.sched_setaffinity(0, {int(cpu) for cpu in args.client_cpus.split(",")})

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    print(f"pinning: servers on cpus {args.server_cpus or 'any'}, client on cpus {args.client_cpus or 'any'}")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or quick_run(args.recipe, args.train_steps, Path(tmp) / args.recipe)
        export_onnx(run_dir)
        compare_runtimes(run_dir)
        print(f"load: {args.requests} requests, {args.concurrency} concurrent {args.client} clients, 1 image each")
        report(run_modes(run_dir, digit_png(run_dir), args, Path(tmp)))


if __name__ == "__main__":
    main()
