"""What the gateway itself costs a request: its whole time minus its wait for the engine.

The API starts a `RequestClock` when a request arrives and reads it when the response's last
byte is sent (`api/overhead.py`); the answering service labels the clock with its route and
adds every wait for the engine to it (`waiting_for_engine`). The clock lives in a context
variable, so the service needs no extra parameter, and the tasks a request spawns (the
disconnect watcher's, a streaming response's) share the same clock object.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token


class RequestClock:
    __slots__ = ("route", "started", "upstream_s")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.upstream_s = 0.0
        self.route: str | None = None
        """Set by the service on the routes that call an engine: only those are measured."""

    def overhead_s(self) -> float:
        return max(0.0, time.perf_counter() - self.started - self.upstream_s)


_CLOCK: ContextVar[RequestClock | None] = ContextVar("twinloop_request_clock", default=None)


def start_clock() -> tuple[RequestClock, Token[RequestClock | None]]:
    clock = RequestClock()
    return clock, _CLOCK.set(clock)


def stop_clock(token: Token[RequestClock | None]) -> None:
    _CLOCK.reset(token)


def current_clock() -> RequestClock:
    """The request's clock; outside a request (tests calling the service), a clock nobody
    reads, so callers never branch."""
    return _CLOCK.get() or RequestClock()


def measure(route: str) -> RequestClock:
    """Label the request's clock with its route (the service calls it once it knows)."""
    clock = current_clock()
    clock.route = route
    return clock


@contextmanager
def waiting_for_engine(clock: RequestClock) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        clock.upstream_s += time.perf_counter() - started
