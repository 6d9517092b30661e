"""`twinloop_gateway_overhead_seconds`: observed once per answering request, by route, as the
request's time less its waits for the engine."""

from __future__ import annotations

import httpx
import pytest

from twinloop.inference import overhead
from twinloop.runtime import Runtime


def _count(runtime: Runtime, route: str) -> float:
    value = runtime.metrics.registry.get_sample_value(
        "twinloop_gateway_overhead_seconds_count", {"route": route}
    )
    return value or 0.0


async def test_each_answering_route_is_observed_once_per_request(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await client.post("/answer", json={"question": "Q?", "domain": "law"})
    await client.post(
        "/v1/chat/completions",
        json={"model": "general", "messages": [{"role": "user", "content": "Hi"}]},
    )
    stream = await client.post(
        "/v1/chat/completions",
        json={"model": "general", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
    )
    assert stream.status_code == 200 and "[DONE]" in stream.text
    await client.get("/healthz")

    assert (_count(runtime, "answer"), _count(runtime, "chat")) == (1, 1)
    assert _count(runtime, "chat_stream") == 1
    families = {m.name for m in runtime.metrics.registry.collect()}
    assert "twinloop_gateway_overhead_seconds" in families
    rendered = runtime.metrics.render().decode()
    assert 'twinloop_gateway_overhead_seconds_count{route="answer"} 1.0' in rendered


def test_the_clock_subtracts_the_waits_for_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(overhead.time, "perf_counter", lambda: now[0])
    clock, token = overhead.start_clock()
    try:
        assert overhead.measure("chat") is clock
        now[0] += 0.002  # the gateway's own work
        with overhead.waiting_for_engine(clock):
            now[0] += 1.0  # the engine
        now[0] += 0.003
        assert clock.route == "chat"
        assert clock.overhead_s() == pytest.approx(0.005)
    finally:
        overhead.stop_clock(token)
    # Outside a request the service still gets a clock, one nobody reads.
    assert overhead.current_clock() is not clock
