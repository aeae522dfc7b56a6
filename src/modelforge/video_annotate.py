"""``modelforge video RUN in.avi out.mp4``: run a trained model over a video and write an annotated copy.

What is drawn on each frame:

* the run's prediction, for any task that declares ``frame_result`` ("label" or "boxes") and reads images or
  videos (``input_kind``) — a video task sees a sliding window of the last ``window`` frames (default: its
  ``frames_per_prediction()``), sampled to its clip length, every ``every`` frames; an image task sees each
  ``every``-th frame on its own (labels as a banner, boxes as rectangles);
* with ``overlay="motion"`` (the default), a heat map of recent motion and boxes around moving regions, found by
  OpenCV's MOG2 background subtraction — no learned model, so it works on any footage (OpenCV's ``vtest.avi``
  pedestrians) but marks *whatever moves*, not people in particular.

Frames are read one at a time (``iter_frames``), so memory does not grow with the video's length; the output is
written by ``VideoWriter`` (codec from the suffix: .mp4 → mp4v, .avi → MJPG, .mkv → FFV1) into a temporary file
that is renamed into place at the end, so a failed run never leaves a half-written video under the target name.
"""

from __future__ import annotations

import collections
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelforge.core.errors import ConfigError, DataError

GREEN, WHITE = (60, 220, 60), (255, 255, 255)
# what a frame can show (Task.frame_result: a {label, probability} or {"boxes": [{label, score, box}]} result) and
# what a frame or a window of frames can be given as (Task.input_kind)
DRAWN_RESULTS, FRAME_INPUTS = ("label", "boxes"), ("image", "video")


@dataclass
class AnnotateResult:
    path: Path
    frames: int
    width: int
    height: int
    fps: float
    predictions: int
    labels: dict[str, int] = field(default_factory=dict)  # how often each label was shown
    snapshot: Path | None = None


class MotionOverlay:
    """Moving regions by background subtraction (MOG2): a decaying heat map of foreground pixels plus boxes.

    ``decay`` sets how long motion stays visible (0.85 per frame ≈ a 7-frame trail); regions smaller than
    ``min_area`` of the frame are noise (leaves, compression artefacts) and get no box.
    """

    def __init__(self, decay: float = 0.85, min_area: float = 0.0006, history: int = 200):
        import cv2

        self.cv2 = cv2
        self.subtractor = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=25, detectShadows=True)
        self.decay, self.min_area = decay, min_area
        self.heat: np.ndarray | None = None
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """Feed an RGB frame; returns the heat map (H, W) float in [0, 1] and boxes (x, y, w, h) of moving regions."""
        cv2 = self.cv2
        mask = self.subtractor.apply(frame)
        mask = np.where(mask == 255, 255, 0).astype(np.uint8)  # 127 = shadow: not an object
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.kernel, iterations=2)
        current = mask.astype(np.float32) / 255
        self.heat = current if self.heat is None else np.maximum(self.heat * self.decay, current)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        smallest = self.min_area * mask.shape[0] * mask.shape[1]
        boxes = [tuple(int(v) for v in cv2.boundingRect(c)) for c in contours if cv2.contourArea(c) >= smallest]
        return self.heat, sorted(boxes)

    def draw(self, frame: np.ndarray, heat: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
        cv2 = self.cv2
        colours = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        alpha = (0.6 * heat)[..., None]
        out = (frame * (1 - alpha) + colours * alpha).astype(np.uint8)
        for x, y, w, h in boxes:
            cv2.rectangle(out, (x, y), (x + w, y + h), GREEN, 2)
        return out


def _banner(frame: np.ndarray, lines: list[str]) -> np.ndarray:
    """White text on a dark strip at the top-left (readable over any footage)."""
    import cv2

    scale = max(0.45, frame.shape[1] / 1400)
    thickness = 1 if scale < 0.8 else 2
    height = int(24 * scale / 0.55)
    widths = [cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for line in lines]
    strip_w, strip_h = min(frame.shape[1], max(widths, default=0) + 12), min(frame.shape[0], height * len(lines) + 8)
    region = frame[:strip_h, :strip_w]
    frame[:strip_h, :strip_w] = (region * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        y = 4 + height * (i + 1) - int(6 * scale)
        cv2.putText(frame, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, WHITE, thickness, cv2.LINE_AA)
    return frame


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


class _ModelView:
    """What the run says about the stream so far: text lines and boxes for the current frame."""

    def __init__(self, predictor: Any, every: int, window: int | None):
        self.predictor, self.every = predictor, every
        self.task = predictor.task
        self.name = predictor.name
        self._check_drawable(predictor.recipe.task)
        self.window = window or self.task.frames_per_prediction()
        self.frames: collections.deque = collections.deque(maxlen=self.window)
        self.lines: list[str] = []
        self.boxes: list[dict[str, Any]] = []
        self.predictions = 0
        self.counts: collections.Counter = collections.Counter()

    def _check_drawable(self, task_name: str) -> None:
        if self.task.frame_result in DRAWN_RESULTS and self.task.input_kind in FRAME_INPUTS:
            return
        from modelforge.tasks import get_task, task_names

        drawable = [name for name in task_names() if get_task(name).frame_result in DRAWN_RESULTS
                    and get_task(name).input_kind in FRAME_INPUTS]
        raise ConfigError(f"`modelforge video` needs a {', '.join(drawable)} run; {self.name!r} is a run of "
                          f"task {task_name!r}")

    def update(self, index: int, frame: np.ndarray) -> None:
        self.frames.append(frame)
        if index % self.every or len(self.frames) < self.window:
            if not self.lines:
                self.lines = [f"{self.name}: waiting for {self.window} frames"]
            return
        if self.task.input_kind == "video":
            result = self.predictor.predict([np.stack(self.frames)])[0]
        else:
            result = self.predictor.predict([_png(frame)])[0]
        self.predictions += 1
        self.boxes = list(result.get("boxes", [])) if isinstance(result, dict) else []
        if isinstance(result, dict) and "label" in result:
            self.lines = [f"{self.name}: {result['label']} ({result.get('probability', 0):.2f})"]
            self.counts[str(result["label"])] += 1
        else:
            self.lines = [f"{self.name}: {len(self.boxes)} detection(s)"]
            self.counts.update(str(b.get("label")) for b in self.boxes)

    def draw(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        for box in self.boxes:
            x, y, w, h = (int(round(v)) for v in box["box"])
            cv2.rectangle(frame, (x, y), (x + w, y + h), (255, 80, 80), 2)
            cv2.putText(frame, f"{box['label']} {box.get('score', 0):.2f}", (x, max(12, y - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 80, 80), 1, cv2.LINE_AA)
        return frame


def _frames(source: Path, max_frames: int | None) -> Iterator[tuple[int, np.ndarray]]:
    from modelforge.data.formats.video import iter_frames

    for index, frame in enumerate(iter_frames(source)):
        if max_frames is not None and index >= max_frames:
            return
        yield index, frame


def annotate_video(
    run: str | Path,
    source: str | Path,
    target: str | Path,
    *,
    overlay: Literal["motion", "none"] = "motion",
    every: int = 1,
    window: int | None = None,
    max_frames: int | None = None,
    snapshot: str | Path | None = None,
    snapshot_at: int | None = None,
) -> AnnotateResult:
    """Annotate ``source`` with ``run``'s predictions (and the motion overlay) into ``target``; optionally save one
    annotated frame (``snapshot_at``, default the middle one) as a PNG ``snapshot``."""
    from modelforge.api import load
    from modelforge.core.atomic import atomic_write_bytes
    from modelforge.data.formats.video import VideoWriter, probe_video

    if every < 1 or (window is not None and window < 1) or (max_frames is not None and max_frames < 1):
        raise ConfigError("--every, --window and --max-frames must be ≥ 1")
    if overlay not in ("motion", "none"):
        raise ConfigError(f"--overlay must be motion or none, got {overlay!r}")
    source, target = Path(source), Path(target)
    if source.resolve() == target.resolve():
        raise ConfigError(f"{target}: the output would overwrite the input video")
    info = probe_video(source)  # DataError naming the file when it is missing, empty or corrupt
    view = _ModelView(load(run), every, window)
    motion = MotionOverlay() if overlay == "motion" else None
    total = min(info.frame_count, max_frames or info.frame_count) or None
    pick = snapshot_at if snapshot_at is not None else (total // 2 if total else 0)
    shot: np.ndarray | None = None
    tmp = target.with_name(f".{target.stem}.tmp-{os.getpid()}{target.suffix}")
    try:
        with VideoWriter(tmp, fps=info.fps or 10.0) as writer:
            for index, frame in _frames(source, max_frames):
                view.update(index, frame)
                out = frame.copy()
                lines = list(view.lines)
                if motion is not None:
                    heat, boxes = motion.update(frame)
                    out = motion.draw(out, heat, boxes)
                    lines.append(f"moving regions: {len(boxes)} (background subtraction)")
                out = _banner(view.draw(out), [*lines, f"frame {index + 1}"])
                writer.write(out)
                if index == pick:
                    shot = out
        if writer.frames == 0:
            raise DataError(f"{source}: no frames to annotate")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    saved = None
    if snapshot is not None:
        if shot is None:
            raise DataError(f"--snapshot-at {pick} is past the last frame ({writer.frames - 1})")
        saved = Path(snapshot)
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(saved, _png(shot))
    height, width = writer.size[1], writer.size[0]
    return AnnotateResult(target, writer.frames, width, height, writer.fps, view.predictions, dict(view.counts), saved)
