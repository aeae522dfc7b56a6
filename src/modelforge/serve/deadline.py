"""A request's model work is abandoned when its client goes away or its time is up.

Without this a client that disconnects still has its inputs run (every other client waits behind them), and a
request can wait without bound behind a busy model. ``for_client`` races the work against the client's disconnect
message and a deadline; cancelling the work cancels its batcher future, so the batcher drops those inputs before
it runs the next batch (a forward pass already running finishes; its result is discarded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

from modelforge.serve.errors import ClientError

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer was ready: there is nobody to answer."""


async def _disconnected(request: Request) -> None:
    """Returns once the ASGI server reports the client's disconnect (the body has been read by now, so the next
    message can only be ``http.disconnect``)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def for_client(request: Request, work: Awaitable[T], timeout: float | None) -> T:
    """The result of ``work``; ``ClientError(504)`` after ``timeout`` seconds, ``ClientGone`` if the client leaves."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the handler itself was cancelled (server shutdown)
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    if watcher in done:
        raise ClientGone()
    raise ClientError(504, f"no answer within the {timeout:g} s request timeout (the server is busy; retry later)")
