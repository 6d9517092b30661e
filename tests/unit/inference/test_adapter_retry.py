from __future__ import annotations

import httpx
import pytest

from twinloop.engines.client import EngineClient, EngineModelNotFoundError
from twinloop.inference.adapter_retry import chat_with_adapter_retry
from twinloop.settings import Slot

BODY = {"model": "law-abc", "messages": [{"role": "user", "content": "Q?"}]}


class Engine:
    """An engine that has lost `law-abc` until a reconcile loads it (unless `sticky`)."""

    def __init__(self, *, sticky: bool = False) -> None:
        self.loaded = False
        self.sticky = sticky
        self.asked = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked += 1
        if not self.loaded:
            message = "The model `law-abc` does not exist."
            return httpx.Response(404, json={"error": {"message": message}})
        return httpx.Response(200, json={"choices": [{"message": {"content": "Paris."}}]})

    def client(self) -> EngineClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        return EngineClient(name="green", base_url="http://engine:1", http=http, retries=0)


class Releases:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reconciled: list[Slot] = []

    async def reconcile(self, slot: Slot) -> list[str]:
        self.reconciled.append(slot)
        self.engine.loaded = not self.engine.sticky
        return ["law-abc"]


async def test_a_lost_adapter_is_reconciled_then_asked_once_more() -> None:
    engine = Engine()
    releases = Releases(engine)

    result = await chat_with_adapter_retry(
        engine.client(), BODY, slot=Slot.GREEN, adapter="law-abc", releases=releases
    )

    assert result.text == "Paris."
    assert releases.reconciled == [Slot.GREEN]
    assert engine.asked == 2


async def test_a_served_adapter_is_asked_once_without_a_reconcile() -> None:
    engine = Engine()
    engine.loaded = True
    releases = Releases(engine)

    result = await chat_with_adapter_retry(
        engine.client(), BODY, slot=Slot.BLUE, adapter="law-abc", releases=releases
    )

    assert result.text == "Paris."
    assert (releases.reconciled, engine.asked) == ([], 1)


async def test_without_an_adapter_not_found_is_raised_without_a_reconcile() -> None:
    engine = Engine()
    releases = Releases(engine)

    with pytest.raises(EngineModelNotFoundError):
        await chat_with_adapter_retry(
            engine.client(), BODY, slot=Slot.GREEN, adapter=None, releases=releases
        )

    assert releases.reconciled == []
    assert engine.asked == 1


async def test_a_second_not_found_after_the_reconcile_is_raised() -> None:
    engine = Engine(sticky=True)
    releases = Releases(engine)

    with pytest.raises(EngineModelNotFoundError):
        await chat_with_adapter_retry(
            engine.client(), BODY, slot=Slot.GREEN, adapter="law-abc", releases=releases
        )

    assert releases.reconciled == [Slot.GREEN]
    assert engine.asked == 2  # once more, never a loop
