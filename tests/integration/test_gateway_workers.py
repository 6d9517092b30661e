"""Two gateway workers (`twinloop serve` with gateway.workers=2: real processes) on one
PostgreSQL database: both serve, a swap made through one is taken by both, /metrics,
whichever worker answers, reads every worker's values (Prometheus multi-process mode), and
a canary started through one splits every user alike through both, from the same moment.

The engines are `FakeEngine` served over real HTTP from this process; Chroma is the
session's real server; the router is the real embedding router (each worker loads it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rag.server import ChromaServer
from twinloop.canary.assignment import assign
from twinloop.db import migrate
from twinloop.settings import CanarySettings, Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import FakeEngine
from twinloop.testing.engine_server import serve_over_http
from twinloop.testing.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "gateway-workers-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _per_worker(metrics: str, name: str) -> dict[str, dict[str, float]]:
    """pid -> {label value (or name): value} for a gauge kept per worker."""
    workers: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get("slot", name)
                workers.setdefault(sample.labels["pid"], {})[key] = sample.value
    return workers


@pytest.fixture
async def two_workers(
    postgres_database: str,
    tmp_path: Path,
    chroma_server: ChromaServer,
    engine_settings: Settings,
) -> AsyncIterator[str]:
    await asyncio.to_thread(migrate.upgrade, postgres_database)
    engine = FakeEngine(ports={})
    async with serve_over_http(engine.handle, ports=2) as served:
        blue, green = served.ports
        engine.ports = {blue: "blue", green: "green"}
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HF_HUB_OFFLINE": "1",
            "TWINLOOP_DATA_DIR": str(tmp_path),
            "TWINLOOP_DATABASE_URL": postgres_database,
            "TWINLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
            "TWINLOOP_LOG_LEVEL": "WARNING",
            "TWINLOOP_GATEWAY__PORT": str(port),
            "TWINLOOP_GATEWAY__WORKERS": "2",
            "TWINLOOP_GATEWAY__RELEASE_POLL_S": "0.1",
            "TWINLOOP_ENGINES__EXTERNAL": "true",
            "TWINLOOP_ENGINES__BLUE_PORT": str(blue),
            "TWINLOOP_ENGINES__GREEN_PORT": str(green),
            "TWINLOOP_RAG__EXTERNAL": "true",
            "TWINLOOP_RAG__CHROMA_PORT": str(engine_settings.rag.chroma_port),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        log = tmp_path / "gateway.log"
        process = _serve(env, log)
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                await _until_both_serve(client, process, log)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "twinloop.cli", "serve"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _until_both_serve(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + 240  # each worker loads the embedding model
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the gateway exited:\n{_tail(log)}"
        try:
            metrics = (await client.get("/metrics")).text
            if len(_per_worker(metrics, "twinloop_release_generation")) == 2:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"two workers did not start:\n{_tail(log)}")


async def test_two_workers_serve_and_both_take_a_swap(two_workers: str) -> None:
    # A new connection per request: the kernel hands each to either worker.
    async def fresh(method: str, path: str, **kwargs: object) -> httpx.Response:
        async with httpx.AsyncClient(base_url=two_workers, timeout=30) as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    answers = [
        await fresh("POST", "/answer", json={"question": f"Q{i}?", "domain": "law"})
        for i in range(8)
    ]
    assert [a.status_code for a in answers] == [200] * 8, answers[0].text

    swap = await fresh("POST", "/swap", json={"generation": "latest"}, headers=ADMIN)
    assert swap.status_code == 200, swap.text
    assert (swap.json()["generation"], swap.json()["active_slot"]) == (2, "green")

    deadline = time.monotonic() + 30
    while True:
        metrics = (await fresh("GET", "/metrics")).text
        slots = _per_worker(metrics, "twinloop_active_slot")
        generations = _per_worker(metrics, "twinloop_release_generation")
        agreed = [s.get("green") for s in slots.values()] == [1.0, 1.0] and [
            g["twinloop_release_generation"] for g in generations.values()
        ] == [2.0, 2.0]
        if agreed or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert agreed, (slots, generations)
    for _ in range(6):
        status = (await fresh("GET", "/status", headers=ADMIN)).json()
        assert (status["generation"], status["active_slot"]) == (2, "green")
    # Counters are summed over the workers: every answer is counted once.
    served = sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "twinloop_requests_total" and sample.labels["outcome"] == "ok"
    )
    assert served == 8


async def test_a_canary_started_through_one_worker_splits_users_alike_on_both(
    two_workers: str, tmp_path: Path
) -> None:
    async def fresh(method: str, path: str, **kwargs: object) -> httpx.Response:
        async with httpx.AsyncClient(base_url=two_workers, timeout=30) as client:
            return await client.request(method, path, **kwargs)  # type: ignore[arg-type]

    folder = write_fake_adapter(tmp_path / "src" / "law")
    adapter = await fresh("POST", "/adapters", json={"path": str(folder), "domain": "law"},
                          headers=ADMIN)  # fmt: skip
    assert adapter.status_code == 201, adapter.text
    staged = await fresh("POST", "/snapshots", json={"adapters": {"law": adapter.json()["id"]}},
                         headers=ADMIN)  # fmt: skip
    assert staged.status_code == 201, staged.text
    started = await fresh("POST", "/canary", json={"percent": 50}, headers=ADMIN)
    assert started.status_code == 200, started.text
    split_from = datetime.fromisoformat(started.json()["percent_from"])
    users = [f"user-{i}" for i in range(12)]
    salt = CanarySettings().salt
    expected = {
        u: assign(percent=50, user_id=u, session_id=None, rng=Random(0), salt=salt).arm.value
        for u in users
    }

    # Each request on a new connection, so either worker answers it, until past the split.
    served: list[tuple[str, str, datetime, datetime]] = []
    while (now := datetime.now(UTC)) < split_from + timedelta(seconds=1.5):
        for user in users:
            body = {"question": "Q?", "domain": "law", "user_id": user}
            answer = await fresh("POST", "/answer", json=body)
            assert answer.status_code == 200, answer.text
            served.append((user, answer.json()["role"], now, datetime.now(UTC)))

    for user, role, begun, ended in served:
        if role == "canary":
            assert ended >= split_from, "a worker split before percent_from"
        if begun > split_from:
            assert role == expected[user], (user, role)
    assert {role for _, role, _, _ in served} == {"canary", "active"}
