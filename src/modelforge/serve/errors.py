"""How a failure becomes an HTTP answer: ``ClientError`` (a 4xx the client can fix) and the one mapping that
predict and explain share from what a model call raises to a status and a one-line message.

A model call fails because of its input when decoding a well-formed-looking upload goes wrong deep inside a
library (Pillow, ``wave``, OpenCV, a tokenizer): those errors are 422. Anything else is a bug in the server or the
model and stays a 500 whose details go to the server log only.
"""

from __future__ import annotations

import logging
import struct
import zlib

from modelforge.core.errors import ModelforgeError, first_line

log = logging.getLogger("modelforge.serve")

# What decoding libraries raise for a corrupt or hostile input (Pillow alone raises all of these for some file).
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, SyntaxError, EOFError,
                                                  struct.error, zlib.error, RecursionError)


class ClientError(Exception):
    """A request the client must fix: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def model_failure(exc: BaseException, model_name: str) -> ClientError | None:
    """The client error for what a predict or explain call raised, or None when it is the server's fault."""
    from modelforge.serve.batching import QueueFullError, ServerClosingError

    if isinstance(exc, ClientError):
        return exc
    if isinstance(exc, QueueFullError):
        return ClientError(503, str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ServerClosingError):
        return ClientError(503, str(exc), {"Connection": "close"})
    if isinstance(exc, ModelforgeError):
        return ClientError(422, first_line(exc))
    if _is_pillow_bomb(exc):
        return ClientError(413, "the image is over Pillow's decompression-bomb pixel limit")
    if isinstance(exc, INPUT_ERRORS):
        log.warning("model %s rejected an input: %r", model_name, exc)
        return ClientError(422, f"the model could not process this input ({exc.__class__.__name__}: "
                                f"{first_line(exc)[:200]})")
    return None


def _is_pillow_bomb(exc: BaseException) -> bool:
    from PIL import Image

    return isinstance(exc, Image.DecompressionBombError)
