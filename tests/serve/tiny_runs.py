"""Untrained, seeded artifacts of one model per input kind (text, audio, video), for tests of the HTTP layer: the
API is under test, not the models. Each builds in well under a second."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import torch

from modelforge.artifacts.model_dir import save_artifact
from modelforge.tasks import get_task
from modelforge.tasks.recipes import load_recipe

WORDS = "a witty moving film dull overlong muddled pointless remake good cast saved never story".split()


def _save(root: Path, recipe, task) -> Path:
    torch.manual_seed(0)
    save_artifact(root / "model", recipe, task, task.build_model().eval())
    return root


def image_run(root: Path) -> Path:
    """A grey 16×16 image classifier over ten digit labels (explanations supported)."""
    recipe = load_recipe("digits-cnn", [])
    task = get_task(recipe.task)(recipe, state={"labels": [str(i) for i in range(10)], "channels": 1,
                                                "image_size": 16, "mean": [0.3], "std": [0.4]})
    return _save(root / "image", recipe, task)


def sentiment_run(root: Path) -> Path:
    """A text classifier (LSTM; explanations supported) over a 30-review vocabulary."""
    rng = np.random.default_rng(0)
    csv = root / "reviews.csv"
    rows = [f"{' '.join(rng.choice(WORDS, rng.integers(2, 9)))},{'fresh' if i % 2 else 'rotten'}" for i in range(30)]
    csv.write_text("text,label\n" + "\n".join(rows) + "\n")
    recipe = load_recipe("sentiment-lstm", ["data.source=file", f"data.path={csv}", "model.embed_dim=16",
                                            "model.hidden_size=8"])
    task = get_task(recipe.task)(recipe)
    task.datasets()
    return _save(root / "sentiment", recipe, task)


def keyword_run(root: Path) -> Path:
    """An audio classifier on 16 mel bands, up to 3 s."""
    recipe = load_recipe("keyword-spotting", ["data.features.n_mels=16", "data.features.max_seconds=3.0",
                                              "model.channels=[8,8]", "model.strides=[1,2]"])
    task = get_task(recipe.task)(recipe, state={"labels": ["lights on", "stop", "play music"], "n_features": 16})
    return _save(root / "kws", recipe, task)


def video_run(root: Path) -> Path:
    """A video classifier on 4 grey 16×16 frames."""
    recipe = load_recipe("moving-digits", ["data.num_frames=4", "data.image_size=16", "model.channels=[4,8]"])
    task = get_task(recipe.task)(recipe, state={"labels": ["left", "right", "up", "down", "static"],
                                                "num_frames": 4, "channels": 1, "image_size": 16,
                                                "mean": [0.1], "std": [0.3]})
    return _save(root / "video", recipe, task)


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(rate)
        wf.writeframes((0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def avi_bytes(path: Path, frames: int = 6) -> bytes:
    from modelforge.data.formats.video import write_video

    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (frames, 16, 16), dtype=np.uint8)
    return write_video(path, clip).read_bytes()
