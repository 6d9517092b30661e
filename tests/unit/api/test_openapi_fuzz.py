"""Schemathesis against the gateway's OpenAPI document (a small budget; bench/api_fuzz.py
runs a longer one): no 5xx, and every response's status, content type and body documented."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from twinloop.testing.api_fuzz import fuzz_client

EXAMPLES = 10
SEED = 14


async def test_generated_requests_get_documented_responses_and_no_server_error(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    report = await fuzz_client(
        client, app.openapi(), examples=EXAMPLES, seed_value=SEED, headers=admin_headers
    )

    assert report.operations >= 26, report.summary()
    assert report.cases >= 200, report.summary()
    assert not report.failures, report.summary()
