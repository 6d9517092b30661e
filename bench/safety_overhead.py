"""What the safety layer adds to a request: the same gateway with its screens off and on.

Two gateways in this process (`api.app.create_app`, each on its own SQLite copy), one with
`TWINLOOP_SAFETY__*` off and one with the defaults (input block, contexts drop, output
redact), both on the same stub engine (`twinloop.testing.engine.FakeEngine`, no network, no
generation) and the same in-memory document index with three passages in the domain. The
requests alternate between the two, so both see the same machine; every millisecond
between them is the screens: their CPU and the thread hops that keep them off the loop.

Routes: `/answer` (question screen, three passages screened, answer redacted), `/v1` whole
and streamed (`--chunk-chars` characters a chunk, like tokens). The stub's answer is ordinary
prose with an e-mail address and a phone number in it (`--answer-chars` long), the worst
case for the output screen: digits wake the phone finder. Then the screens alone, per
call, and what holding back costs a stream: characters the client is behind the engine.

    .venv/bin/python bench/safety_overhead.py --requests 300
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

from bench.results import add_json_option, latency_summary, write_results
from twinloop.db import migrate
from twinloop.safety.screens import SafetyConfig, screen_input, screen_output, screen_passage
from twinloop.safety.stream import StreamRedactor
from twinloop.settings import EngineSettings, SafetySettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter
from twinloop.testing.stats import percentile

ADMIN = {"Authorization": "Bearer bench-safety-admin-token"}
QUESTION = "How long does a Zelco refund take, and who do I write to about it?"
PASSAGES = [
    "Zelco refunds go back to the card you paid with within five working days.",
    "Refunds above 500 euros are checked by the refund desk before they are paid.",
    "The refund desk answers questions about refunds on weekdays from nine to five.",
]
SENTENCE = "Refunds go back to the card you paid with within five working days of the request. "
PII = "Write to refunds@zelco.example.com or call +44 20 7946 0958 if it takes longer. "
OFF = SafetySettings(input="off", contexts="off", output="off")
ON = SafetySettings()


def _answer(chars: int) -> str:
    body = (SENTENCE * (chars // len(SENTENCE) + 1))[: max(0, chars - len(PII))]
    return body[: len(body) // 2] + PII + body[len(body) // 2 :]


@asynccontextmanager
async def _gateway(
    base: Path, name: str, safety: SafetySettings, engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    from api.app import create_app

    data = base / name
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'twinloop.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    settings = Settings(
        data_dir=data,
        database_url=url,
        admin_token=ADMIN["Authorization"].removeprefix("Bearer "),
        engines=EngineSettings(blue_port=18101, green_port=18102, retries=1),
        sqlite_synchronous="NORMAL",  # the disk is not what is measured
        safety=safety,
    )
    knowledge = FakeKnowledge()
    app = create_app(
        settings, engine_transport=engine.transport(), router=FakeRouter(), knowledge=knowledge
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            items = [
                {"type": "document", "id": f"doc-{i}", "domain": "fin", "text": text}
                for i, text in enumerate(PASSAGES)
            ]
            ingested = await client.post("/ingest", json={"items": items}, headers=ADMIN)
            assert ingested.status_code == 202, ingested.text
            swapped = await client.post(
                "/swap", json={"generation": "latest", "force": True}, headers=ADMIN
            )
            assert swapped.status_code == 200, swapped.text
            yield client


async def _answer_route(client: httpx.AsyncClient) -> str:
    response = await client.post("/answer", json={"question": QUESTION, "domain": "fin"})
    assert response.status_code == 200, response.text
    assert len(response.json()["contexts"]) == len(PASSAGES)
    return str(response.json()["answer"])


def _chat(stream: bool) -> dict[str, Any]:
    return {"model": "fin", "messages": [{"role": "user", "content": QUESTION}], "stream": stream}


async def _chat_route(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/chat/completions", json=_chat(False))
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


async def _stream_route(client: httpx.AsyncClient) -> str:
    parts = []
    async with client.stream("POST", "/v1/chat/completions", json=_chat(True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                for choice in chunk["choices"]:
                    parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


Route = Callable[[httpx.AsyncClient], Any]
ROUTES: dict[str, Route] = {
    "/answer": _answer_route,
    "/v1": _chat_route,
    "/v1 stream": _stream_route,
}


async def _measure(
    clients: dict[str, httpx.AsyncClient], route: Route, requests: int, warmup: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in clients}
    for i in range(warmup + requests):
        order = list(clients) if i % 2 == 0 else list(reversed(clients))
        for name in order:
            started = time.perf_counter()
            shown = await route(clients[name])
            elapsed = (time.perf_counter() - started) * 1000
            if i >= warmup:
                times[name].append(elapsed)
            if name == "on":
                assert "zelco.example.com" not in shown and "[EMAIL]" in shown, shown
    return times


def _line(label: str, values: list[float], unit: str = "ms") -> str:
    return (
        f"{label:<28} p50 {percentile(values, 0.5):8.3f}  p90 {percentile(values, 0.9):8.3f}  "
        f"mean {statistics.fmean(values):8.3f} {unit}"
    )


def _screens_alone(answer: str, chunk_chars: int, repeat: int) -> list[str]:
    """The screens called directly, per call (no HTTP, no threads, no database)."""
    config = SafetyConfig()

    def timed(call: Callable[[], object]) -> list[float]:
        out = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            out.append((time.perf_counter() - started) * 1e6)
        return out

    def stream() -> None:
        redactor = StreamRedactor(config.phone_regions, config.stream_max_hold_chars)
        for i in range(0, len(answer), chunk_chars):
            if redactor.feed(answer[i : i + chunk_chars]):
                redactor.release()
        redactor.finish()

    chunks = -(-len(answer) // chunk_chars)
    streamed = timed(stream)
    return [
        _line(
            "input (question)", timed(lambda: screen_input([("q", QUESTION)], config.input)), "us"
        ),
        _line(
            f"contexts ({len(PASSAGES)} passages)",
            timed(lambda: [screen_passage(p, config, where="c") for p in PASSAGES]),
            "us",
        ),
        _line(f"output ({len(answer)} chars)", timed(lambda: screen_output(answer, config)), "us"),
        _line(f"stream ({chunks} chunks), whole", streamed, "us"),
        _line("stream, per chunk", [t / chunks for t in streamed], "us"),
    ]


def _lag(answer: str, chunk_chars: int) -> str:
    """How far behind the engine the client reads, in characters, after each chunk."""
    redactor = StreamRedactor(SafetyConfig().phone_regions)
    lags = []
    for i in range(0, len(answer), chunk_chars):
        if redactor.feed(answer[i : i + chunk_chars]):
            redactor.release()
        lags.append(len(redactor.held))
    return (
        f"stream hold-back: the client reads p50 {percentile(lags, 0.5):.0f}, "
        f"p90 {percentile(lags, 0.9):.0f}, max {max(lags)} characters behind the engine "
        f"({chunk_chars}-character chunks; the e-mail and phone number are held whole)"
    )


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    answer = _answer(args.answer_chars)
    engine = FakeEngine(ports={18101: "blue", 18102: "green"}, reply=answer)
    engine.stream_pieces = [
        answer[i : i + args.chunk_chars] for i in range(0, len(answer), args.chunk_chars)
    ]
    base = Path(tempfile.mkdtemp(prefix="twinloop-safety-bench-"))
    routes: dict[str, Any] = {}
    try:
        async with AsyncExitStack() as stack:
            clients = {
                "off": await stack.enter_async_context(_gateway(base, "off", OFF, engine)),
                "on": await stack.enter_async_context(_gateway(base, "on", ON, engine)),
            }
            for name, route in ROUTES.items():
                times = await _measure(clients, route, args.requests, args.warmup)
                added = [b - a for a, b in zip(times["off"], times["on"], strict=True)]
                print(f"\n{name}  ({args.requests} requests each, alternating)")
                print(_line("  screens off", times["off"]))
                print(_line("  screens on", times["on"]))
                print(_line("  added (paired on - off)", added))
                routes[name] = {
                    "off": latency_summary(times["off"]),
                    "on": latency_summary(times["on"]),
                    "added": latency_summary(added),
                }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\nthe screens alone, per call (this process, no threads):")
    for line in _screens_alone(answer, args.chunk_chars, args.repeat):
        print(f"  {line}")
    print(_lag(answer, args.chunk_chars))
    return {"requests": args.requests, "answer_chars": args.answer_chars, "routes": routes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per mode")
    parser.add_argument("--warmup", type=int, default=30, help="discarded requests per mode")
    parser.add_argument("--answer-chars", type=int, default=600, help="length of the answer")
    parser.add_argument("--chunk-chars", type=int, default=4, help="characters per chunk")
    parser.add_argument("--repeat", type=int, default=200, help="calls per screen, alone")
    add_json_option(parser)
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"twinloop safety layer overhead (in-process gateway, stub engine); "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load {load}; "
        f"answer {args.answer_chars} chars with an e-mail and a phone number"
    )
    write_results(args.json, "safety_overhead", asyncio.run(_run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
