from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter


@pytest.fixture
async def dead_engine_client(
    settings: Settings, closed_ports: tuple[int, int], fake_knowledge: FakeKnowledge
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with its real engine HTTP client, pointed at ports nothing listens on."""
    from api.app import create_app

    blue, green = closed_ports
    engines = settings.engines.model_copy(update={"blue_port": blue, "green_port": green})
    app = create_app(
        settings.model_copy(update={"engines": engines}),
        router=FakeRouter(),
        knowledge=fake_knowledge,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
