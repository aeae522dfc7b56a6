"""Video files through OpenCV (``opencv-python-headless``): probe, read, sample frames uniformly, write.

Frames are uint8 RGB arrays (H, W, 3) (OpenCV's BGR order is converted at the boundary). This OpenCV build (FFmpeg
backend) writes ``.avi`` with MJPG (the default for .avi; also XVID, lossless FFV1), ``.mp4`` with mp4v and ``.mkv``
with FFV1; H.264 (avc1) is not available for writing. A missing, empty, corrupt or undecodable file raises DataError
naming the file and the reason.

Video folders for classification follow the image-folder layout: ``root/<class>/<clip>.avi``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from modelforge.core.errors import DataError, MissingDependencyError

log = logging.getLogger("modelforge.data")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm")
DEFAULT_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "FFV1"}


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("OpenCV is not installed: pip install opencv-python-headless") from None
    return cv2


@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own console errors while probing a bad file: the DataError we raise says it better."""
    cv2 = _cv2()
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield cv2
    finally:
        cv2.utils.logging.setLogLevel(previous)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frame_count: int  # from the container header; may be approximate for some formats
    fps: float
    width: int
    height: int


def _open(path: Path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: video file is empty (0 bytes)")
    with _quiet_opencv() as cv2:
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise DataError(f"{path}: cannot open as a video (corrupt file or unsupported container/codec)")
    return capture


def probe_video(path: str | Path) -> VideoInfo:
    """Header facts of a video, after checking that its first frame decodes."""
    path = Path(path)
    capture = _open(path)
    cv2 = _cv2()
    try:
        with _quiet_opencv():
            ok, _ = capture.read()
        if not ok:
            raise DataError(f"{path}: video has no decodable frames (corrupt or empty stream)")
        return VideoInfo(
            path=path,
            frame_count=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
            fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        capture.release()


def iter_frames(path: str | Path, *, rgb: bool = True) -> Iterator[np.ndarray]:
    """Yield frames one at a time (constant memory, for long videos); DataError if not even one decodes."""
    path = Path(path)
    capture = _open(path)
    cv2 = _cv2()
    count = 0
    try:
        while True:
            with _quiet_opencv():
                ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame
    finally:
        capture.release()
    if count == 0:
        raise DataError(f"{path}: video has no decodable frames (corrupt or empty stream)")


def read_video(path: str | Path, *, max_frames: int | None = None, rgb: bool = True) -> np.ndarray:
    """All frames (or the first ``max_frames``) as a uint8 (T, H, W, 3) array."""
    frames = []
    for frame in iter_frames(path, rgb=rgb):
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    return np.stack(frames)


def sample_indices(total: int, num: int) -> list[int]:
    """``num`` frame indices spread uniformly over ``total`` frames (the centre of each of ``num`` equal segments);
    with fewer frames than ``num`` some repeat, so a clip always yields exactly ``num`` frames."""
    if total <= 0 or num <= 0:
        raise ValueError(f"need positive total and num, got total={total}, num={num}")
    return [min(total - 1, int((i + 0.5) * total / num)) for i in range(num)]


def _gather(path: Path, indices: list[int], rgb: bool) -> tuple[list[np.ndarray], int]:
    """Step through the video (seeking is unreliable across codecs), converting only the wanted frames; returns them
    and the number of frames actually decoded."""
    wanted: dict[int, int] = {}
    for index in indices:
        wanted[index] = wanted.get(index, 0) + 1
    capture = _open(path)
    cv2 = _cv2()
    frames: list[np.ndarray] = []
    position = 0
    try:
        with _quiet_opencv():
            while position <= max(indices) and capture.grab():
                if position in wanted:
                    ok, frame = capture.retrieve()
                    if not ok:
                        break
                    frames.extend([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if rgb else frame] * wanted[position])
                position += 1
    finally:
        capture.release()
    return frames, position


def sample_frames(path: str | Path, num_frames: int, *, rgb: bool = True) -> np.ndarray:
    """``num_frames`` frames sampled uniformly over the whole video, as a uint8 (num_frames, H, W, 3) array."""
    path = Path(path)
    total = probe_video(path).frame_count
    if total > 0:
        frames, decoded = _gather(path, sample_indices(total, num_frames), rgb)
        if len(frames) == num_frames:
            return np.stack(frames)
        # the header overstated the length (e.g. a truncated file): sample again over the frames that really decode
        log.warning("%s: header says %d frames but only %d decode; sampling from those", path, total, decoded)
        total = decoded
    else:
        total = sum(1 for _ in iter_frames(path, rgb=rgb))
    frames, _ = _gather(path, sample_indices(total, num_frames), rgb)
    return np.stack(frames)


class VideoWriter:
    """Write frames one at a time (a context manager); the codec follows the suffix unless ``codec`` is given."""

    def __init__(self, path: str | Path, fps: float = 10.0, codec: str | None = None):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if codec is None and suffix not in DEFAULT_CODECS:
            raise DataError(
                f"{self.path}: cannot pick a codec for suffix {suffix or '(none)'}; use "
                + ", ".join(f"{s} ({c})" for s, c in DEFAULT_CODECS.items())
            )
        self.fps, self.codec = float(fps), codec or DEFAULT_CODECS[suffix]
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._writer = None

    def _start(self, width: int, height: int) -> None:
        cv2 = _cv2()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fourcc = cv2.VideoWriter_fourcc(*self.codec)
        with _quiet_opencv():
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
        if not self._writer.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot write codec {self.codec!r} into a {self.path.suffix} file")
        self.size = (width, height)

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB (H, W, 3) or grayscale (H, W) frame; every frame must have the first one's size."""
        cv2 = _cv2()
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
            raise ValueError(f"a frame must be uint8 (H, W) or (H, W, 3), got {frame.dtype} {frame.shape}")
        height, width = frame.shape[:2]
        if self._writer is None:
            self._start(width, height)
        elif (width, height) != self.size:
            raise ValueError(f"frame {self.frames} is {width}x{height}, the video is {self.size[0]}x{self.size[1]}")
        code = cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_RGB2BGR
        self._writer.write(cv2.cvtColor(frame, code))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if not self.path.is_file() or self.path.stat().st_size == 0:
                raise DataError(f"{self.path}: OpenCV wrote no data (codec {self.codec!r})")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def sample_clip_frames(path: str | Path, num_frames: int) -> np.ndarray:
    """``num_frames`` frames spread uniformly over a clip, as uint8 (T, H, W, 3) RGB.

    Unlike ``sample_frames`` (which re-samples over what decodes), a clip whose header promises frames that do not
    decode is an error here: a truncated training clip would otherwise teach the model frozen, repeated frames.
    """
    path = Path(path)
    total = probe_video(path).frame_count
    if total <= 0:  # no usable count in the header: read everything once
        frames = read_video(path)
        return frames[sample_indices(len(frames), num_frames)]
    wanted = sample_indices(total, num_frames)
    found: dict[int, np.ndarray] = {}
    decoded = 0
    for index, frame in enumerate(iter_frames(path)):
        decoded = index + 1
        if index in wanted:
            found[index] = frame
        if index >= wanted[-1]:
            break
    if len(found) < len(set(wanted)):
        raise DataError(f"{path}: truncated video: the header says {total} frames but only {decoded} decode")
    return np.stack([found[i] for i in wanted])


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0, codec: str | None = None) -> Path:
    """Write uint8 RGB (T, H, W, 3) or grayscale (T, H, W) frames; returns the path."""
    with VideoWriter(path, fps, codec) as writer:
        for frame in frames:
            writer.write(frame)
    if writer.frames == 0:
        raise DataError(f"{path}: no frames to write")
    return Path(path)


def clip_problems(paths: Sequence[Path], check: Callable[[Path], object], on_error: str = "skip") -> list[str | None]:
    """The DataError message ``check(path)`` raises for each clip (None: it passed), in order. Under torchrun each
    rank opens only its contiguous share of the clips and the messages are gathered (``rows_over_ranks``), so every
    rank keeps, skips and reports what one process does; with ``on_error="fail"`` a rank stops at the first bad clip
    of its share (only the first counts)."""
    from modelforge.data.lazy_images import problems_over_ranks  # torch: loaded only when a folder is read

    def problem(index: int) -> str | None:
        try:
            check(paths[index])
        except DataError as exc:
            return str(exc)
        return None

    return problems_over_ranks(range(len(paths)), problem, on_error)


@dataclass
class VideoFolder:
    clips: list[tuple[Path, int]]
    classes: list[str]
    skipped: list[tuple[str, str]]


def read_video_folder(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    on_error: Literal["skip", "fail"] = "fail",
    suffixes: Sequence[str] = VIDEO_SUFFIXES,
) -> VideoFolder:
    """List ``root/<class>/<clip>`` videos with labels, probing each so a bad file is found before training (under
    torchrun each rank probes its share: ``clip_problems``)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: video folder does not exist or is not a directory")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/<video files>")
    classes = list(classes or [d.name for d in dirs])
    index = {name: i for i, name in enumerate(classes)}
    listed, unknown = [], None  # the clips of the class folders before the first unknown one (an error after them)
    for directory in dirs:
        if directory.name not in index:
            unknown = directory
            break
        listed += [(path, index[directory.name]) for path in
                   sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes)]
    clips, skipped = [], []
    for (path, label), problem in zip(listed, clip_problems([path for path, _ in listed], probe_video, on_error)):
        if problem is None:
            clips.append((path, label))
        elif on_error == "fail":
            raise DataError(problem)
        else:
            skipped.append((str(path), problem.removeprefix(f"{path}: ")))
    if unknown is not None:
        raise DataError(f"{unknown}: class {unknown.name!r} is not among the classes {classes}")
    for where, reason in skipped:
        log.warning("skipped %s: %s", where, reason)
    if skipped:
        log.warning("%d video(s) under %s skipped (on_error=fail stops instead)", len(skipped), root)
    if not clips:
        raise DataError(f"{root}: no readable videos found")
    return VideoFolder(clips, classes, skipped)
