"""The OpenAPI document is one a client can be generated from: its timestamps are RFC 3339
date-times, and every route declares the errors it answers with their real body."""

from __future__ import annotations

from datetime import datetime

import httpx


async def test_timestamps_carry_their_zone(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/snapshots", headers=admin_headers)

    assert response.status_code == 200, response.text
    created_at = response.json()[0]["created_at"]
    assert created_at.endswith("Z")
    assert datetime.fromisoformat(created_at).utcoffset() is not None
