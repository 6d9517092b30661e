"""Counts requests in flight per slot, so adapters are not unloaded under them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager


class InflightRequests:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def count(self, slot: str) -> int:
        return self._counts.get(slot, 0)

    @contextmanager
    def track(self, slot: str) -> Iterator[None]:
        self.enter(slot)
        try:
            yield
        finally:
            self.leave(slot)

    def enter(self, slot: str) -> None:
        self._counts[slot] = self.count(slot) + 1
        self._event(slot).clear()

    def leave(self, slot: str) -> None:
        self._counts[slot] -= 1
        if self._counts[slot] == 0:
            self._event(slot).set()

    async def drained(self, slot: str, timeout_s: float) -> bool:
        """Wait until no request runs on `slot`; False if some still did after `timeout_s`."""
        if self.count(slot) == 0:
            return True
        try:
            await asyncio.wait_for(self._event(slot).wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _event(self, slot: str) -> asyncio.Event:
        if slot not in self._idle:
            self._idle[slot] = asyncio.Event()
            self._idle[slot].set()
        return self._idle[slot]
