"""Request body limits: a body over its route's byte limit is a 413 naming the limit.

A declared `Content-Length` over the limit is refused before a byte is read. A body
without one (chunked) is read up to the limit, refused as soon as it passes it, and
otherwise handed to the route as read. Like the request id, a plain ASGI middleware: the
route's `receive` stays the client's, so disconnects still reach it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    setting: str

    def refusal(self, size: int | None) -> str:
        sent = f"{size} bytes" if size is not None else "the body"
        return (
            f"request body: {sent} is over the limit of {self.max_bytes} bytes on this route "
            f"({self.setting})"
        )


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, default: BodyLimit, by_path: Mapping[str, BodyLimit]
    ) -> None:
        self.app = app
        self.default = default
        self.by_path = dict(by_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope["path"], self.default)
        declared = _content_length(scope)
        if declared is not None:
            if declared > limit.max_bytes:
                await error_response(413, "PayloadTooLargeError", limit.refusal(declared))(
                    scope, receive, send
                )
                return
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_up_to(receive, limit.max_bytes)
        except _ClientLeftError:
            return  # nobody to answer
        if body is None:
            await error_response(413, "PayloadTooLargeError", limit.refusal(None))(
                scope, receive, send
            )
            return
        await self.app(scope, replay_body(body, receive), send)


class _ClientLeftError(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_up_to(receive: Receive, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as it is longer than `max_bytes`."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientLeftError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read handed out again first."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
