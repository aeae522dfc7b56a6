"""``POST /models/{name}/predict`` answered straight from the ASGI scope, before FastAPI's router.

FastAPI matches every route in turn, solves the handler's parameters and wraps it in several layers of middleware
and exception handling on each request; for a small model that costs more CPU than the forward pass. This
middleware sits inside the guards (Host, API key, body limit: they still see every request) and calls the same
predict handler the documented route calls, answering errors through the same ``error_answer`` as the app's
exception handlers, so both paths answer alike. Any other path or method goes on to FastAPI unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX, SUFFIX = "/models/", "/predict"


def predict_model_name(scope: Scope) -> str | None:
    """The model name of a ``POST /models/{name}/predict`` request (one path segment, as the route matches), else
    None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)) or len(path) <= len(PREFIX) + len(SUFFIX):
        return None
    name = path[len(PREFIX) : -len(SUFFIX)]
    return None if "/" in name else name


class PredictFastPath:
    def __init__(self, app: ASGIApp, handle: Callable[[str, Request], Awaitable[Response]],
                 on_error: Callable[[Exception, Request], Response]):
        self.app, self.handle, self.on_error = app, handle, on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = predict_model_name(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.handle(name, request)
        except Exception as exc:
            response = self.on_error(exc, request)
        await response(scope, receive, send)
