"""What the server accepts: limits (``ServeSettings``) and the validation of every input before it reaches a model.

Each input kind has one check here — text, image, audio (WAV), video, seed — that turns a JSON value or an uploaded
file into what ``task.preprocess`` receives, or raises ``ClientError`` (a 4xx with a one-line message). Inputs are
validated per request, before batching, so one bad request cannot fail a whole batch.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import struct
import tempfile
import wave
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from modelforge.core.errors import DataError, first_line
from modelforge.serve.batching import BatchSettings
from modelforge.serve.errors import ClientError
from modelforge.tasks.base import ServedText

IMAGE_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM"}
INPUT_KINDS = ("text", "image", "audio", "video", "seed")  # the Task.input_kind values validate_item reads
MAX_SEED = 2**63 - 1
# A raw body is one file: its content type → the input kind it can carry (None: whichever the model takes).
RAW_TYPES: dict[str, str | None] = {"image/png": "image", "image/jpeg": "image", "audio/wav": "audio",
                                    "audio/x-wav": "audio", "audio/wave": "audio", "application/octet-stream": None}
BINARY_KINDS = ("image", "audio", "video")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_MAGIC = {"image/png": PNG_SIGNATURE, "image/jpeg": b"\xff\xd8\xff"}
EXPLAIN_QUERY_OPTIONS = ("method", "target", "steps")
MAX_EXPLAIN_STEPS = 512  # path points of integrated gradients: each one is a forward and backward pass per input


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching; the defaults suit small models on a CPU."""

    batch: BatchSettings = field(default_factory=lambda: BatchSettings(window="adaptive"))
    api_key: str | None = None
    quantized: bool = False  # serve each run's int8 model (``modelforge quantize`` first)
    runtime: str = "auto"  # the batched forward: "auto" (onnxruntime where it serves the model), "torch" or "onnx"
    max_body_bytes: int = 8 * 1024 * 1024
    max_inputs: int = 64
    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 30.0
    max_text_chars: int = 10_000
    # Generation costs a forward pass per new token: cap the tokens per prompt (above the shipped recipes' serve:
    # defaults, so they behave as configured) and the prompts per request.
    max_new_tokens: int = 400
    max_prompts: int = 8
    # A video is decoded on the server: cap the frames its header declares (about 100 s at 30 fps); each frame is
    # also held to ``max_image_pixels``.
    max_video_frames: int = 3000
    # A request's model work is abandoned after this many seconds (504) and as soon as its client disconnects.
    request_timeout: float | None = 60.0
    # Host names the server answers to (DNS rebinding guard); None: any. ``serve`` fills it in when no key is set.
    allowed_hosts: tuple[str, ...] | None = None


# ---- input validation -----------------------------------------------------------------------------------------
def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ClientError(422, f"{where} must be a base64 string")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(422, f"{where} is not valid base64") from None


def png_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR chunk (the first chunk, by the format's rule), or None when the bytes do
    not start that way. Reading 24 bytes costs a small fraction of opening the file with Pillow, which a 28×28 digit
    on the predict path would otherwise pay twice; the full decode later still checks everything else."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return (width, height) if width > 0 and height > 0 else None


def check_image(data: bytes, where: str, max_pixels: int) -> bytes:
    from PIL import Image, UnidentifiedImageError

    size = png_size(data)
    if size is not None:
        if size[0] * size[1] > max_pixels:
            raise ClientError(413, f"{where}: image is {size[0]}×{size[1]} pixels, over the {max_pixels} pixel limit")
        return data
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only: the pixel count is checked before decoding
            fmt, (width, height) = img.format, img.size
    except Image.DecompressionBombError:
        raise ClientError(413, f"{where}: image is over the {max_pixels} pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        raise ClientError(422, f"{where} is not a readable image (PNG, JPEG, BMP, GIF, WEBP, TIFF)") from None
    if fmt not in IMAGE_FORMATS:
        raise ClientError(422, f"{where}: image format {fmt} is not accepted ({', '.join(sorted(IMAGE_FORMATS))})")
    if width * height > max_pixels:
        raise ClientError(413, f"{where}: image is {width}×{height} pixels, over the {max_pixels} pixel limit")
    return data


def wav_seconds(data: bytes) -> float:
    """Duration from a WAV header (PCM through ``wave``; float/extensible by the fmt and data chunk sizes); a
    sample rate outside ``data.audio.SAMPLE_RATES`` is a ValueError."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("no RIFF/WAVE header")
    try:
        with wave.open(io.BytesIO(data), "rb") as wf:
            rate = _checked_rate(wf.getframerate())
            return wf.getnframes() / rate
    except RuntimeError:  # ``wave`` skipping a chunk that runs past the end of the data
        raise ValueError("a chunk runs past the end of the file") from None
    except wave.Error as exc:
        if "unknown format" not in str(exc):
            raise ValueError(str(exc)) from None
    pos, frame_bytes, rate = 12, None, None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"fmt " and size >= 16:
            _, channels, rate, _, block_align, _ = struct.unpack("<HHIIHH", data[pos + 8 : pos + 24])
            frame_bytes = block_align or channels
        elif chunk == b"data" and frame_bytes and rate:
            return min(size, len(data) - pos - 8) / frame_bytes / _checked_rate(rate)
        pos += 8 + size + (size & 1)
    raise ValueError("missing fmt or data chunk")


def _checked_rate(rate: int) -> int:
    from modelforge.data.audio import SAMPLE_RATES

    if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise ValueError(f"sample rate {rate} Hz is outside {SAMPLE_RATES[0]}–{SAMPLE_RATES[1]} Hz")
    return rate


def check_audio(data: bytes, where: str, max_seconds: float) -> bytes:
    try:
        seconds = wav_seconds(data)
    except (ValueError, EOFError, struct.error) as exc:
        raise ClientError(422, f"{where} is not a readable WAV file ({exc})") from None
    if seconds > max_seconds:
        raise ClientError(413, f"{where}: audio is {seconds:.1f} s long, over the {max_seconds:g} s limit")
    return data


def check_text(value: Any, where: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise ClientError(422, f"{where} must be a string")
    if not value.strip():
        raise ClientError(422, f"{where} is empty")
    if len(value) > max_chars:
        raise ClientError(413, f"{where} is {len(value)} characters long, over the {max_chars} character limit")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON's "\\ud800" escapes decode to a half of a UTF-16 pair
        raise ClientError(422, f"{where} holds a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                               f"{exc.start}: text must be valid Unicode") from None
    return value


def check_seed(value: Any, where: str) -> int:
    """A generator's input: a non-negative integer seed (a JSON number, or digits in a string or form field)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClientError(422, f"{where} must be an integer seed, got {str(value)[:40]!r}")
    if not 0 <= value <= MAX_SEED:
        raise ClientError(422, f"{where}: seed {value} is outside 0…{MAX_SEED}")
    return value


def check_video(data: bytes, where: str, settings: ServeSettings, num_frames: int) -> np.ndarray:
    """Decode an uploaded video (AVI, MP4, MKV, MOV, WEBM — what OpenCV's FFmpeg reads) into ``num_frames``
    frames spread over the clip, uint8 (T, H, W, 3) RGB, after checking its declared length and frame size.

    OpenCV reads from a path only, so the bytes go to a private temporary file, removed before returning. Blocking:
    call it off the event loop.
    """
    from modelforge.data.formats.video import probe_video, sample_clip_frames

    fd, name = tempfile.mkstemp(prefix="modelforge-upload-", suffix=".video")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            info = probe_video(name)
            if info.frame_count > settings.max_video_frames:
                raise ClientError(413, f"{where}: video has {info.frame_count} frames, over the "
                                       f"{settings.max_video_frames} frame limit")
            if info.width * info.height > settings.max_image_pixels:
                raise ClientError(413, f"{where}: video frames are {info.width}×{info.height} pixels, over the "
                                       f"{settings.max_image_pixels} pixel limit")
            return sample_clip_frames(name, num_frames)
        except DataError as exc:  # the message names the temporary file: say which input instead
            reason = str(exc).partition(": ")[2] or "unreadable"
            raise ClientError(422, f"{where} is not a readable video ({reason})") from None
    finally:
        os.unlink(name)


def validate_item(kind: str | None, value: Any, where: str, settings: ServeSettings,
                  spec: dict[str, Any] | None = None) -> Any:
    """One JSON input (str, or int for seeds) or uploaded file (bytes) → what ``task.preprocess`` receives for this
    input kind; ``spec`` is the task's ``input_spec()`` (a video's frame count comes from it)."""
    if kind == "text":
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise ClientError(422, f"{where} is not UTF-8 text") from None
        return ServedText(check_text(value, where, settings.max_text_chars))  # never read as a file path
    if kind == "seed":
        return check_seed(value.decode("ascii", "replace") if isinstance(value, bytes) else value, where)
    data = value if isinstance(value, bytes) else _b64(value, where)
    if kind == "image":
        return check_image(data, where, settings.max_image_pixels)
    if kind == "audio":
        return check_audio(data, where, settings.max_audio_seconds)
    if kind == "video":
        return check_video(data, where, settings, int((spec or {}).get("num_frames", 8)))
    raise ClientError(422, f"this model takes {kind!r} inputs, which the server cannot read")


def parse_json(body: bytes) -> Any:
    """The request body as JSON, or a 400 saying why not (Python's parser raises RecursionError for deep nesting
    and ValueError for an integer over its digit limit: both are the client's doing)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ClientError(400, "request body is not valid JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"request body is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except UnicodeDecodeError:
        raise ClientError(400, "request body is not valid JSON: not UTF-8") from None
    except ValueError as exc:  # int(str) over sys.get_int_max_str_digits()
        raise ClientError(400, f"request body is not valid JSON: {str(exc).partition(';')[0]}") from None


async def read_inputs(request: Request, model: Any, settings: ServeSettings) -> list[Any]:
    """The request's inputs, validated: a JSON ``{"inputs": [...]}`` body, a multipart upload or one raw file
    (``RAW_TYPES``; a WAV body is checked as audio, an image body as an image, by ``validate_item``). ``model`` is the
    app's ``ServedModel`` (its input ``kind``, ``input_spec`` and whether it ``generates``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = parse_json(await request.body())
        raw = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise ClientError(422, 'JSON body must be an object with a list "inputs": {"inputs": [...]}')
        values: list[Any] = raw
    elif content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):  # the latter: text fields
        values = await _multipart_values(request, settings)
    elif content_type in RAW_TYPES:
        values = [await raw_body(request, content_type, model.kind)]
    else:
        raise ClientError(415, f"content type {content_type or '(none)'!r} is not accepted; send application/json "
                               f"or multipart/form-data, or one raw file ({', '.join(RAW_TYPES)})")
    if not values:
        raise ClientError(422, "no inputs given")
    if len(values) > settings.max_inputs:
        raise ClientError(413, f"{len(values)} inputs in one request, over the limit of {settings.max_inputs}")
    if model.generates and len(values) > settings.max_prompts:
        raise ClientError(413, f"{len(values)} prompts in one request, over the limit of {settings.max_prompts} "
                               "for a generating model")
    spec = model.input_spec
    if model.kind == "video":  # decoding takes a while: keep the event loop free for other requests
        return [await run_in_threadpool(validate_item, model.kind, value, f"inputs[{i}]", settings, spec)
                for i, value in enumerate(values)]
    return [validate_item(model.kind, value, f"inputs[{i}]", settings, spec) for i, value in enumerate(values)]


async def raw_body(request: Request, content_type: str, kind: str | None) -> bytes:
    """The body of a raw upload (one file, no JSON or multipart around it), after checking that its content type
    suits the model's input kind and, for an image type, that the bytes are that format."""
    # 422, not 415: the server accepts the type (one OpenAPI schema serves every model), this model cannot use it.
    expected = RAW_TYPES[content_type]
    if expected is not None and kind != expected:
        raise ClientError(422, f"content type {content_type!r} sends {expected} but this model takes {kind} inputs")
    if kind not in BINARY_KINDS:
        raise ClientError(422, f"a raw body cannot carry {kind} inputs; send application/json or multipart/form-data")
    data = await request.body()
    if not data:
        raise ClientError(422, "inputs[0]: the request body is empty")
    magic = IMAGE_MAGIC.get(content_type)
    if magic is not None and not data.startswith(magic):
        raise ClientError(422, f"inputs[0]: the body is not {content_type} (its first bytes are not that format's)")
    return data


async def _multipart_values(request: Request, settings: ServeSettings) -> list[Any]:
    """Uploaded files (any field name) as bytes, plus ``text`` and ``seed`` form fields as str, in the order sent."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=settings.max_inputs, max_fields=settings.max_inputs,
                                  max_part_size=settings.max_body_bytes)
    except Exception as exc:  # python-multipart and starlette raise several types for malformed bodies
        reason = str(getattr(exc, "detail", "") or first_line(exc))
        if reason.startswith("Too many"):  # fields or files over max_inputs: a limit, not a malformed body
            raise ClientError(413, f"multipart body: {reason}") from None
        status = getattr(exc, "status_code", 400)
        raise ClientError(status if 400 <= status < 500 else 400, f"malformed multipart body ({reason})") from None
    values: list[Any] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            values.append(await value.read())
        elif key in ("text", "seed"):
            values.append(value)
    await form.close()
    return values


def explain_options(query: Any) -> dict[str, Any]:
    """``?method=…&target=LABEL&steps=N`` of an explain request, checked: an unknown option or a ``steps`` outside
    2…MAX_EXPLAIN_STEPS is a 422 rather than silently ignored (or an unbounded amount of work)."""
    unknown = [key for key in query.keys() if key not in EXPLAIN_QUERY_OPTIONS]
    if unknown:
        valid = ", ".join(EXPLAIN_QUERY_OPTIONS)
        raise ClientError(422, f"unknown query option {unknown[0][:60]!r}; explain takes {valid}")
    options: dict[str, Any] = {key: query[key] for key in ("method", "target") if key in query}
    if "steps" in query:
        text = query["steps"]
        if not text.isdigit() or not 2 <= int(text) <= MAX_EXPLAIN_STEPS:
            raise ClientError(422, f"steps must be a whole number from 2 to {MAX_EXPLAIN_STEPS}, got {text[:20]!r}")
        options["steps"] = int(text)
    return options


def predict_options(query: Any, declared: dict[str, str], settings: ServeSettings) -> dict[str, Any]:
    """The per-call options of a predict request's query string, as the task declares them (``Task.query_options``:
    "text" = one value, "texts" = the key repeated): an undeclared key, an empty or over-long text, or more
    texts than ``max_inputs`` is a 422."""
    unknown = [key for key in query.keys() if key not in declared]
    if unknown:
        valid = ", ".join(declared) or "none"
        raise ClientError(422, f"unknown query option {unknown[0][:60]!r}; this model's predict takes {valid}")
    options: dict[str, Any] = {}
    for key, how in declared.items():
        values = query.getlist(key)
        if not values:
            continue
        if how == "text" and len(values) > 1:
            raise ClientError(422, f"give {key} once, got it {len(values)} times")
        if len(values) > settings.max_inputs:
            raise ClientError(413, f"{len(values)} {key} values, over the limit of {settings.max_inputs}")
        for value in values:
            if not value.strip():
                raise ClientError(422, f"{key} must be a non-empty text")
            if len(value) > settings.max_text_chars:
                raise ClientError(413, f"{key} is {len(value)} characters, over the {settings.max_text_chars} limit")
        options[key] = [ServedText(v) for v in values] if how == "texts" else ServedText(values[0])
    return options
