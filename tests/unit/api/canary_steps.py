"""Steps the canary tests share: stage a fake adapter to Shadow, start a canary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from twinloop.testing.adapters import write_fake_adapter


async def stage_adapter(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    tmp_path: Path,
    domain: str = "law",
    *,
    seed: int = 0,
) -> tuple[str, str]:
    """A fake adapter for `domain` registered and staged to Shadow: its engine model name
    and the staged snapshot's id."""
    folder = write_fake_adapter(tmp_path / "src" / domain, seed=seed)
    adapter = await client.post(
        "/adapters", json={"path": str(folder), "domain": domain}, headers=headers
    )
    assert adapter.status_code == 201, adapter.text
    created = await client.post(
        "/snapshots", json={"adapters": {domain: adapter.json()["id"]}}, headers=headers
    )
    assert created.status_code == 201, created.text
    return str(adapter.json()["name"]), str(created.json()["id"])


async def start_canary(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> Any:
    response = await client.post("/canary", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()
