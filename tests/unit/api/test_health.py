from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from twinloop.runtime import Runtime
from twinloop.testing.engine import FakeEngine


async def test_healthz_is_alive(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})


async def test_readyz_probes_the_active_engine_with_one_token(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "ready": True, "database": "ok", "active_slot": "blue", "engine": "ok",
    }  # fmt: skip
    probe = fake_engine.calls("/v1/completions")[0]
    assert probe["max_tokens"] == 1


async def test_readyz_caches_a_success_but_never_a_failure(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    first = await client.get("/readyz")
    second = await client.get("/readyz")
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(fake_engine.calls("/v1/completions")) == 1

    fake_engine.down.add("green")  # the shadow slot does not matter
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_is_503_when_the_active_engine_is_down(
    client: httpx.AsyncClient, fake_engine: FakeEngine
) -> None:
    fake_engine.down.add("blue")

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["ready"] is False
    assert "unreachable" in response.json()["engine"]
    assert 'twinloop_engine_ready{slot="blue"} 0.0' in (await client.get("/metrics")).text


async def test_readyz_is_503_when_nothing_listens_on_the_active_engine_port(
    dead_engine_client: httpx.AsyncClient, closed_ports: tuple[int, int]
) -> None:
    response = await dead_engine_client.get("/readyz")

    assert response.status_code == 503, response.text
    body = response.json()
    assert (body["ready"], body["database"], body["active_slot"]) == (False, "ok", "blue")
    assert f"127.0.0.1:{closed_ports[0]} is unreachable" in body["engine"]


async def test_metrics_count_answers_by_route_slot_and_domain(client: httpx.AsyncClient) -> None:
    answered = await client.post("/answer", json={"question": "Q?", "domain": "med"})
    assert answered.status_code == 200, answered.text

    text = (await client.get("/metrics")).text

    labels = 'adapter="",domain="med",outcome="ok",route="answer",slot="blue"'
    assert f"twinloop_requests_total{{{labels}}} 1.0" in text
    latency = 'domain="med",route="answer",slot="blue"'
    assert f"twinloop_request_latency_seconds_count{{{latency}}} 1.0" in text
    assert 'twinloop_active_slot{slot="blue"} 1.0' in text
    assert "twinloop_release_generation 1.0" in text


async def test_readyz_answers_within_its_timeout_behind_a_hung_engine(
    client: httpx.AsyncClient, fake_engine: FakeEngine, runtime: Runtime
) -> None:
    fake_engine.hang = True
    timeout_s = runtime.settings.gateway.readiness_timeout_s

    started = time.monotonic()
    response = await client.get("/readyz")

    assert time.monotonic() - started < timeout_s + 1.0
    assert response.status_code == 503
    assert f"did not answer within {timeout_s:g} s" in response.json()["engine"]


async def test_readyz_names_a_database_failure_without_its_text(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise OperationalError("SELECT 1", {}, Exception("secret path /var/lib/x.db locked"))

    monkeypatch.setattr(runtime.readiness, "_sessionmaker", _Broken(broken))

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["database"] == "error: database unavailable (OperationalError)"
    assert "secret" not in response.text


async def test_a_database_outage_is_503_with_retry_after(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def store(record: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(runtime.answers, "_store", store)

    response = await client.post("/answer", json={"question": "Q?", "domain": "law"})

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "DatabaseUnavailableError"
    assert response.headers["retry-after"] == "1"
    assert "locked" not in response.text


class _Broken:
    """A sessionmaker whose `begin()` fails as an unreachable database does."""

    def __init__(self, fail: Callable[[], None]) -> None:
        self._fail = fail

    def begin(self) -> Any:
        self._fail()
