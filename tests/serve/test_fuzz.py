"""A bounded fuzz test of the server (issue 15): random byte flips of a valid PNG, JPEG, WAV and AVI, each sent to
a model of its kind through the whole app (validation, batching, decoding, the model), must never get a 5xx or
log a traceback. Seeded, so a failure reproduces; bounded by a case count and a time limit."""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import logging
import random
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import digit_png
from tiny_runs import avi_bytes, image_run, keyword_run, video_run, wav_bytes

from modelforge.serve.app import ServeSettings, create_app
from modelforge.serve.batching import BatchSettings

CASES = {"png": 1500, "jpeg": 1500, "wav": 1500, "avi": 1000}
TIME_LIMIT_S = 60  # the bound; the 5,500 cases take about 20 s on a shared 2-core CPU
CONCURRENCY = 8
SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=8, max_wait_ms=2), max_audio_seconds=3.0,
                         max_video_frames=100, max_image_pixels=64 * 64)


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1–8 random bytes overwritten, or (one case in eight) the file cut short after a flip."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    if rng.random() < 0.125:
        del out[rng.randrange(1, len(out)):]
    return bytes(out)


@pytest.fixture(scope="module")
def app_and_root(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("fuzz")
    app = create_app([f"image={image_run(root)}", f"audio={keyword_run(root)}", f"video={video_run(root)}"],
                     SETTINGS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second intra-op thread only waits for a busy core (100× slower)
    try:
        yield app, root
    finally:
        torch.set_num_threads(threads)


def _interleaved(seeds: dict[str, tuple[str, bytes]], rng: random.Random) -> list[tuple[str, str, bytes]]:
    """(kind, model, mutated bytes), the kinds taking turns so that each gets its share within the time limit."""
    cases = []
    for i in range(max(CASES.values())):
        cases += [(name, seeds[name][0], mutate(seeds[name][1], rng)) for name in CASES if i < CASES[name]]
    return cases


async def _send_all(app, cases, deadline: float) -> tuple[collections.Counter, list]:
    """Each case as its own request, ``CONCURRENCY`` at a time (so they also share batches: a bad input in a
    batch sends its neighbours through the one-by-one retry)."""
    import httpx

    statuses: collections.Counter = collections.Counter()
    failures = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        for start in range(0, len(cases), CONCURRENCY):
            if time.monotonic() > deadline:
                break
            chunk = cases[start : start + CONCURRENCY]
            responses = await asyncio.gather(*(http.post(f"/models/{model}/predict", json={
                "inputs": [base64.b64encode(data).decode()]}) for _, model, data in chunk))
            for (name, _, data), response in zip(chunk, responses):
                statuses[(name, response.status_code)] += 1
                if response.status_code >= 500 or set(response.json()) not in ({"error"}, {"model", "predictions"}):
                    failures.append((name, response.status_code, response.text[:200], base64.b64encode(data)[:80]))
    for model in app.state.models.values():
        await model.batcher.stop()
    return statuses, failures


def test_byte_flipped_uploads_never_get_a_5xx(app_and_root, caplog):
    app, root = app_and_root
    seeds = {"png": ("image", digit_png(3, size=16)[0]), "jpeg": ("image", _jpeg()),
             "wav": ("audio", wav_bytes(0.5)), "avi": ("video", avi_bytes(root / "clip.avi"))}
    with TestClient(app) as test_client:
        for model, data in seeds.values():  # each seed file itself is served
            response = test_client.post(f"/models/{model}/predict",
                                        json={"inputs": [base64.b64encode(data).decode()]})
            assert response.status_code == 200, (model, response.text)

    cases = _interleaved(seeds, random.Random(15))
    caplog.set_level(logging.WARNING, logger="modelforge.serve")
    start = time.monotonic()
    statuses, failures = asyncio.run(_send_all(app, cases, start + TIME_LIMIT_S))
    tried = sum(statuses.values())
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    by_kind = {name: sum(n for (kind, _), n in statuses.items() if kind == name) for name in CASES}
    by_status = collections.Counter()
    for (_, status), n in statuses.items():
        by_status[status] += n
    print(f"\nfuzz: {tried} cases {by_kind} in {time.monotonic() - start:.0f} s, statuses "
          f"{dict(sorted(by_status.items()))}, 5xx {sum(n for s, n in by_status.items() if s >= 500)}, "
          f"tracebacks {len(tracebacks)}")
    assert not failures, failures[:5]
    assert not tracebacks, [r.getMessage() for r in tracebacks[:5]]
    assert tried >= 1000, f"only {tried} cases within {TIME_LIMIT_S} s"
