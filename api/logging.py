"""Request ids: taken from `X-Request-ID` or made, bound to every log line, echoed back.

A plain ASGI middleware rather than BaseHTTPMiddleware, which would buffer
streams and hide client disconnects from the routes.
"""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinloop.db.base import new_id

HEADER = b"x-request-id"


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(HEADER, b"").decode("latin-1")[:128]
        request_id = incoming or new_id()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode())]
            await send(message)

        # Bound and reset by token rather than with `bound_contextvars`, which reads every
        # context variable first and binds twice (3.1 against 0.9 us per request, of ~330 us
        # of gateway CPU for a cached answer); the reset restores the same value it would.
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
