"""The whole slice against a real vLLM CPU engine: gateway -> engine -> real model."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

from twinloop.settings import Settings, Slot

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


def test_answer_comes_from_the_real_model(gateway_url: str) -> None:
    response = httpx.post(f"{gateway_url}/answer", json={"question": QUESTION}, timeout=120)

    assert response.status_code == 200, response.text
    body = response.json()
    assert "Paris" in body["answer"]
    assert (body["slot"], body["domain"], body["adapter"]) == ("blue", "general", None)
    assert body["snapshot_id"]


def test_the_router_sends_a_legal_question_to_law(gateway_url: str) -> None:
    question = "Can my landlord keep my security deposit after I move out?"
    response = httpx.post(
        f"{gateway_url}/answer", json={"question": question, "max_tokens": 8}, timeout=120
    )

    assert response.status_code == 200, response.text
    assert response.json()["domain"] == "law"
    assert response.json()["route_score"] > 0.25


def test_readyz_is_200_with_a_generating_engine(gateway_url: str) -> None:
    response = httpx.get(f"{gateway_url}/readyz", timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["engine"] == "ok"


def test_openai_client_gets_plain_and_streamed_completions(gateway_url: str) -> None:
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", timeout=120)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": QUESTION}
    ]

    assert "auto" in [m.id for m in client.models.list()]
    plain = client.chat.completions.create(
        model="auto", messages=messages, max_tokens=32, temperature=0
    )
    assert "Paris" in (plain.choices[0].message.content or "")

    stream = client.chat.completions.create(
        model="general", messages=messages, max_tokens=32, temperature=0, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 1
    assert "Paris" in "".join(pieces)


def _running_requests(engine_settings: Settings) -> float:
    text = httpx.get(f"{engine_settings.engines.base_url(Slot.BLUE)}/metrics", timeout=10).text
    match = re.search(r"^vllm:num_requests_running\{[^}]*\} ([0-9.]+)", text, re.MULTILINE)
    assert match, "vLLM exports vllm:num_requests_running"
    return float(match.group(1))


def test_a_client_that_leaves_stops_the_generation(
    gateway_url: str, engine_settings: Settings
) -> None:
    body = {
        "model": "auto",
        # `min_tokens` is not on the gateway's allow-list: counting runs long by itself.
        "messages": [{"role": "user", "content": "Count from 1 to 2000, one number a line."}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{gateway_url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # one chunk, then hang up
    assert _running_requests(engine_settings) <= 1

    # 1500 tokens take a minute at CPU speed; the engine must give up within seconds.
    deadline = time.monotonic() + 10
    while _running_requests(engine_settings) > 0:
        assert time.monotonic() < deadline, "the engine kept generating for a client that left"
        time.sleep(0.2)
