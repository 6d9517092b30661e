"""`twinloop_gateway_overhead_seconds`: a request's time in the gateway, less its engine wait.

A plain ASGI middleware (like `api/logging.py`'s), so a stream is timed to its last byte
and nothing is buffered. It starts the request's clock (`twinloop.inference.overhead`);
the answering service labels it with its route and adds its waits for the engine; the
figure is observed once the response's last body message is sent. Requests the service
never labelled (health checks, admin routes, refused bodies) are not observed.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from twinloop.inference.overhead import RequestClock, start_clock, stop_clock


class OverheadMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock, token = start_clock()

        async def send_and_time(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                _observe(scope, clock)

        try:
            await self.app(scope, receive, send_and_time)
        finally:
            stop_clock(token)


def _observe(scope: Scope, clock: RequestClock) -> None:
    if clock.route is None:
        return
    runtime = getattr(scope["app"].state, "runtime", None)
    if runtime is not None:
        runtime.metrics.gateway_overhead.labels(clock.route).observe(clock.overhead_s())
