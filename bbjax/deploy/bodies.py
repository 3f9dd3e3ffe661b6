"""Reading an HTTP request body with a size cap and a deadline (starlette).

A body declared (``Content-Length``) or streamed larger than the cap is refused as soon as
that is known, and one that does not arrive whole within the deadline (a slow-loris client
trickling bytes) is refused too, so no request holds memory or a worker for long.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request


class BodyRefused(Exception):
    """The body was not read: ``status`` is the HTTP status to answer (413 too large, 408
    too slow, 400 a bad ``Content-Length``), ``reason`` a metric label."""

    def __init__(self, status: int, reason: str, detail: str):
        self.status, self.reason, self.detail = status, reason, detail
        super().__init__(detail)


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """The whole body of ``request``: at most ``max_bytes`` bytes, arriving within
    ``timeout`` seconds; else :class:`BodyRefused`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyRefused(400, "bad_length", f"Content-Length {declared!r} is no length")
        if int(declared) > max_bytes:
            raise BodyRefused(413, "oversized",
                              f"the body of {declared} bytes is over the {max_bytes}-byte cap")
    parts: list[bytes] = []
    size = 0

    async def collect() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyRefused(413, "oversized",
                                  f"the body is over the {max_bytes}-byte cap")
            parts.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise BodyRefused(408, "body_timeout",
                          f"the body did not arrive within {timeout} s") from None
    return b"".join(parts)
