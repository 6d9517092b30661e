"""Request bodies over a route's byte limit are refused with 413 before they are read whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine

MAX_BODY = 2_000
MAX_INGEST_BODY = 5_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    gateway = settings.gateway.model_copy(
        update={"max_body_bytes": MAX_BODY, "max_ingest_body_bytes": MAX_INGEST_BODY}
    )
    return settings.model_copy(update={"gateway": gateway})


def _padded(size: int) -> bytes:
    """A JSON body of `size` bytes that would be valid but for its size."""
    head, tail = b'{"question": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("path", ["/answer", "/v1/chat/completions", "/swap"])
async def test_a_body_over_the_limit_is_413_naming_it(
    client: httpx.AsyncClient, fake_engine: FakeEngine, path: str
) -> None:
    response = await client.post(
        path, content=_padded(MAX_BODY + 1), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413, response.text
    assert response.json()["error"] == "PayloadTooLargeError"
    assert f"{MAX_BODY} bytes" in response.json()["detail"]
    assert "gateway.max_body_bytes" in response.json()["detail"]
    assert response.headers["x-request-id"]
    assert fake_engine.requests == []


async def test_a_body_at_the_limit_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/answer", content=_padded(MAX_BODY), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def test_a_chunked_body_is_counted_as_it_comes(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = _padded(MAX_BODY + 500)
        for start in range(0, len(body), 300):
            yield body[start : start + 300]

    response = await client.post(
        "/answer", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413, response.text
    assert "gateway.max_body_bytes" in response.json()["detail"]


async def test_ingest_has_its_own_larger_limit(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    item = {"type": "document", "id": "d1", "domain": "law", "text": "t" * (MAX_BODY + 100)}
    fits = await client.post("/ingest", json={"items": [item]}, headers=admin_headers)
    item["text"] = "t" * (MAX_INGEST_BODY + 1)
    too_big = await client.post("/ingest", json={"items": [item]}, headers=admin_headers)

    assert fits.status_code == 202, fits.text
    assert too_big.status_code == 413
    assert f"{MAX_INGEST_BODY} bytes" in too_big.json()["detail"]
    assert "gateway.max_ingest_body_bytes" in too_big.json()["detail"]
