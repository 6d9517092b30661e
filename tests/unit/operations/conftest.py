from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from twinloop.testing.adapters import write_fake_adapter

Register = Callable[..., Awaitable[dict[str, object]]]


@pytest.fixture
def register(client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path) -> Register:
    """Register a tiny fake adapter through the admin API; returns its view."""

    async def _register(domain: str = "law", seed: int = 0) -> dict[str, object]:
        folder = write_fake_adapter(tmp_path / "src" / f"{domain}-{seed}", seed=seed)
        response = await client.post(
            "/adapters", json={"path": str(folder), "domain": domain}, headers=admin_headers
        )
        assert response.status_code == 201, response.text
        body: dict[str, object] = response.json()
        return body

    return _register
