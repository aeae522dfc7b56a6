"""ASGI middleware that refuses a request from its headers alone, before its body is read.

Outermost first: ``HostGuard`` (the ``Host`` and ``Origin`` headers, against DNS rebinding and cross-site form
posts to a server without an API key), ``ApiKeyGuard`` (an unauthenticated client cannot make the server buffer
a body) and ``BodyLimit`` (413 over the size limit). Each answers with the server's JSON error shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROTECTED_PREFIX = "/models"  # everything else (/health, the web page, /docs, /openapi.json) stays open
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}``; a message quoting client text may hold lone surrogates, which UTF-8 cannot encode."""
    safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return JSONResponse({"error": safe}, status_code=status, headers=headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def host_name(authority: str) -> str:
    """``host[:port]`` or ``[v6]:port`` → the lower-case host name, without brackets or port."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def allowed_hosts_for(bound: str, extra: Iterable[str] = ()) -> tuple[str, ...] | None:
    """The host names a server bound to ``bound`` answers to: its loopback names, or the address itself, plus
    ``extra``; None (no check) for a wildcard bind with nothing given, since any name may then reach it."""
    extra = tuple(host_name(h) for h in extra)
    if bound in ("0.0.0.0", "::", "") and not extra:
        return None
    own = LOOPBACK_NAMES if bound in LOOPBACK_NAMES else (host_name(bound),)
    return own + extra


class HostGuard:
    """400 for a ``Host`` header that is not one of ``allowed``, and 403 for a browser request whose ``Origin``
    is another site (a cross-site form post is sent without a CORS preflight)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]):
        self.app, self.allowed = app, frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host") or ""
        if host_name(host) not in self.allowed:
            shown = host[:80]
            await error_response(400, f"Host {shown!r} is not served here (allowed: {', '.join(sorted(self.allowed))}"
                                      "; add names with --allowed-hosts)")(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            await error_response(403, f"cross-origin request from {origin[:80]!r} refused")(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ApiKeyGuard:
    """401 on ``/models…`` unless a key is sent (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) and every
    key sent matches (constant-time): a wrong credential next to a right one is refused, not ignored."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode()

    def _accepted(self, scope: Scope) -> bool:
        given = []
        if (header := _header(scope, b"x-api-key")) is not None:
            given.append(header.strip())
        if (auth := _header(scope, b"authorization")) is not None:
            scheme, _, token = auth.strip().partition(" ")
            given.append(token.strip() if scheme.lower() == "bearer" else "")  # another scheme: not this key
        results = [hmac.compare_digest(value.encode("latin-1"), self.key) for value in given]
        return bool(results) and all(results)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX) or self._accepted(scope):
            await self.app(scope, receive, send)
            return
        message = "missing or invalid API key (send Authorization: Bearer KEY or X-API-Key: KEY)"
        headers = {"WWW-Authenticate": "Bearer", "Connection": "close"}  # the unread body is not wanted
        await error_response(401, message, headers)(scope, receive, send)


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413 before the app reads them: by Content-Length when declared,
    otherwise while reading (chunked uploads). The body is buffered (it is small by construction) and replayed."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body is over the {self.max_bytes} byte limit"
        await error_response(413, message, {"Connection": "close"})(scope, receive, send)
