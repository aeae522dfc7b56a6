"""A bounded fuzz test of the server (issue 15): random byte flips of a valid PNG, JPEG, WAV and AVI, each sent to
a model of its kind through the whole app (validation, batching, decoding, the model), must never get a 5xx or
log a traceback. Seeded, so a failure reproduces; bounded by a case count and a time limit."""

from __future__ import annotations

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

CASES = {"png": 700, "jpeg": 700, "wav": 700, "avi": 300}  # AVI decoding goes through a file and OpenCV: slower
TIME_LIMIT_S = 90  # a bound for a slow machine; about 50 s on a busy 2-core CPU
SETTINGS = ServeSettings(batch=BatchSettings(max_batch_size=1, max_wait_ms=0), max_audio_seconds=3.0,
                         max_video_frames=100, max_image_pixels=512 * 512)


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
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app([f"image={image_run(root)}", f"audio={keyword_run(root)}", f"video={video_run(root)}"],
                     SETTINGS)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client, root


def test_byte_flipped_uploads_never_get_a_5xx(client, caplog):
    test_client, root = client
    seeds = {"png": ("image", digit_png(3, size=16)[0]), "jpeg": ("image", _jpeg()),
             "wav": ("audio", wav_bytes(0.5)), "avi": ("video", avi_bytes(root / "clip.avi"))}
    for model, data in seeds.values():  # each seed file itself is served
        response = test_client.post(f"/models/{model}/predict", json={"inputs": [base64.b64encode(data).decode()]})
        assert response.status_code == 200, (model, response.text)

    rng, tried, statuses, failures = random.Random(15), 0, collections.Counter(), []
    caplog.set_level(logging.WARNING, logger="modelforge.serve")
    start = time.monotonic()
    for name, count in CASES.items():
        model, seed = seeds[name]
        for _ in range(count):
            if time.monotonic() - start > TIME_LIMIT_S:
                break
            case = mutate(seed, rng)
            response = test_client.post(f"/models/{model}/predict",
                                        json={"inputs": [base64.b64encode(case).decode()]})
            tried += 1
            statuses[response.status_code] += 1
            if response.status_code >= 500 or set(response.json()) not in ({"error"}, {"model", "predictions"}):
                failures.append((name, response.status_code, response.text[:200], base64.b64encode(case)[:80]))
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    print(f"\nfuzz: {tried} cases in {time.monotonic() - start:.0f} s, statuses {dict(sorted(statuses.items()))}, "
          f"5xx {sum(n for s, n in statuses.items() if s >= 500)}, tracebacks {len(tracebacks)}")
    assert not failures, failures[:5]
    assert not tracebacks, [r.getMessage() for r in tracebacks[:5]]
    assert tried >= 1000, f"only {tried} cases within {TIME_LIMIT_S} s"
