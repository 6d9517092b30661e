"""Blue/green against two real vLLM engines, with real PEFT adapters."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import start_http_server

from tests.integration.scrape import rewritten_config, running_prometheus, wait_for
from tests.unit.deploy.support import require_tool
from tests.unit.test_dashboards import VLLM_METRICS
from twinloop.settings import Settings, Slot
from twinloop.testing.adapters import make_random_lora
from twinloop.testing.ports import free_port
from twinloop.training.metrics import TrainerMetrics

pytestmark = pytest.mark.integration

QUESTION = "What is the capital of France?"


@pytest.fixture
def admin(gateway_settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway_settings.admin_token.get_secret_value()}"}


def _register(url: str, admin: dict[str, str], folder: Path, domain: str = "law") -> dict[str, str]:
    response = httpx.post(
        f"{url}/adapters", json={"path": str(folder), "domain": domain}, headers=admin, timeout=60
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


def _answer(url: str, **extra: object) -> dict[str, object]:
    response = httpx.post(
        f"{url}/answer",
        json={"question": QUESTION, "domain": "law", "max_tokens": 12, **extra},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _engine_models(settings: Settings, slot: str) -> list[str]:
    from twinloop.settings import Slot

    data = httpx.get(f"{settings.engines.base_url(Slot(slot))}/v1/models", timeout=10).json()
    return [m["id"] for m in data["data"]]


def test_register_stage_swap_rollback_and_tamper(
    two_engine_gateway: str,
    admin: dict[str, str],
    prepared_model: Path,
    gateway_settings: Settings,
    tmp_path: Path,
) -> None:
    url = two_engine_gateway
    folder = make_random_lora(prepared_model, tmp_path / "law", seed=0, scaling=8)
    adapter = _register(url, admin, folder)
    start = httpx.get(f"{url}/status", headers=admin, timeout=30).json()
    shadow = start["shadow_slot"]

    staged = httpx.post(
        f"{url}/snapshots", json={"adapters": {"law": adapter["id"]}, "reason": "test"},
        headers=admin, timeout=120,
    )  # fmt: skip

    assert staged.status_code == 201, staged.text
    assert adapter["name"] in _engine_models(gateway_settings, shadow)
    assert adapter["name"] not in _engine_models(gateway_settings, start["active_slot"])
    active = _answer(url)
    preview_response = httpx.post(
        f"{url}/answer",
        json={"question": QUESTION, "domain": "law", "max_tokens": 12, "target": "shadow"},
        headers=admin, timeout=120,
    )  # fmt: skip
    preview = preview_response.json()
    assert active["adapter"] is None and active["slot"] == start["active_slot"]
    assert preview["adapter"] == adapter["name"] and preview["slot"] == shadow
    # Random LoRA weights change greedy output: Shadow really serves the adapter.
    assert preview["answer"] != active["answer"]

    change = {"generation": start["generation"] + 1}  # staging wrote one release
    swapped = httpx.post(f"{url}/swap", json=change, headers=admin, timeout=60).json()
    after_swap = _answer(url)
    assert swapped["active_slot"] == shadow
    assert (after_swap["slot"], after_swap["adapter"]) == (shadow, adapter["name"])
    assert after_swap["answer"] == preview["answer"]

    change = {"generation": swapped["generation"]}
    rolled = httpx.post(f"{url}/rollback", json=change, headers=admin, timeout=60).json()
    after_rollback = _answer(url)
    assert rolled["active_slot"] == start["active_slot"]
    assert after_rollback["adapter"] is None
    assert after_rollback["answer"] == active["answer"]

    # A stored adapter changed on disk is refused before any engine sees it.
    other = _register(url, admin, make_random_lora(prepared_model, tmp_path / "law2", seed=1))
    stored = next(Path(gateway_settings.data_dir, "adapters").glob(f"{other['sha256']}*"))
    weights = stored / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    refused = httpx.post(
        f"{url}/snapshots", json={"adapters": {"law": other["id"]}}, headers=admin, timeout=60
    )
    assert refused.status_code == 409
    assert "will not be loaded" in refused.json()["detail"]
    for slot in ("blue", "green"):
        assert other["name"] not in _engine_models(gateway_settings, slot)


def test_no_request_fails_across_twenty_swaps_and_rollbacks(
    two_engine_gateway: str, admin: dict[str, str], prepared_model: Path, tmp_path: Path
) -> None:
    url = two_engine_gateway
    adapter = _register(url, admin, make_random_lora(prepared_model, tmp_path / "law", seed=0))
    staged = httpx.post(
        f"{url}/snapshots", json={"adapters": {"law": adapter["id"]}}, headers=admin, timeout=120
    ).json()
    results: list[tuple[int, dict[str, object]]] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set() and len(results) < 2000:
                r = client.post(
                    f"{url}/answer",
                    json={"question": QUESTION, "domain": "law", "max_tokens": 4},
                )
                results.append((r.status_code, r.json()))

    workers = [threading.Thread(target=send) for _ in range(4)]
    for worker in workers:
        worker.start()
    flips: list[float] = []
    generation = httpx.get(f"{url}/status", headers=admin, timeout=30).json()["generation"]
    try:
        for i in range(20):
            time.sleep(0.5)
            path = "/swap" if i % 2 == 0 else "/rollback"
            started = time.perf_counter()
            change = {"generation": generation}
            flip = httpx.post(f"{url}{path}", json=change, headers=admin, timeout=60)
            flips.append(time.perf_counter() - started)
            assert flip.status_code == 200, flip.text
            generation = flip.json()["generation"]
    finally:
        time.sleep(0.5)
        stop.set()
        for worker in workers:
            worker.join(timeout=120)

    failures = [body for status, body in results if status != 200]
    assert not failures, failures[:3]
    # Requests overlapped the flips (a CPU engine answers a few per second).
    assert len(results) >= 10
    for _, body in results:
        # Every answer names where it was served, and that is consistent.
        if body["snapshot_id"] == staged["id"]:
            assert body["adapter"] == adapter["name"]
        else:
            assert body["adapter"] is None
        assert body["slot"] in ("blue", "green")
    served = {body["snapshot_id"] for _, body in results}
    assert staged["id"] in served and len(served) == 2
    assert max(flips) < 5


def test_two_gateway_processes_agree_after_a_swap(
    two_engine_gateway: str, admin: dict[str, str], gateway_settings: Settings
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TWINLOOP_DATA_DIR": str(gateway_settings.data_dir),
        "TWINLOOP_DATABASE_URL": gateway_settings.sqlalchemy_url,
        "TWINLOOP_ADMIN_TOKEN": gateway_settings.admin_token.get_secret_value(),
        "TWINLOOP_ENGINES__BLUE_PORT": str(gateway_settings.engines.blue_port),
        "TWINLOOP_ENGINES__GREEN_PORT": str(gateway_settings.engines.green_port),
        "TWINLOOP_GATEWAY__PORT": str(port),
        "TWINLOOP_RAG__CHROMA_PORT": str(gateway_settings.rag.chroma_port),
        "TWINLOOP_LOG_LEVEL": "WARNING",
    }
    second = subprocess.Popen(
        [sys.executable, "-m", "twinloop.cli", "serve"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    other = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{other}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.2)

        for first, follower in ((two_engine_gateway, other), (other, two_engine_gateway)):
            latest = {"generation": "latest"}
            swapped = httpx.post(f"{first}/swap", json=latest, headers=admin, timeout=60).json()
            started = time.monotonic()
            while True:
                seen = httpx.get(f"{follower}/status", headers=admin, timeout=10).json()
                if seen["active_slot"] == swapped["active_slot"]:
                    break
                assert time.monotonic() - started < 1.0, "gateways disagreed for over 1 s"
                time.sleep(0.02)
    finally:
        second.terminate()
        second.wait(timeout=30)


def test_prometheus_scrapes_the_gateway_engines_and_trainer_with_deploys_config(
    two_engine_gateway: str, gateway_settings: Settings, tmp_path: Path
) -> None:
    binary = require_tool("prometheus", "Debian's prometheus; `make deploy-tools` installs it")
    _answer(two_engine_gateway)  # a request, so that the gateway's request series exist
    # The trainer's /metrics as the trainer serves it (its registry on prometheus_client's
    # server), without a trainer: this module starts no cycle.
    trainer, thread = start_http_server(0, addr="127.0.0.1", registry=TrainerMetrics().registry)
    engines = gateway_settings.engines
    addresses = {
        "gateway:8000": two_engine_gateway.removeprefix("http://"),
        "trainer:8300": f"127.0.0.1:{trainer.server_port}",
        "vllm-blue:8000": f"{engines.host}:{engines.port(Slot.BLUE)}",
        "vllm-green:8000": f"{engines.host}:{engines.port(Slot.GREEN)}",
    }
    try:
        config = rewritten_config(addresses, interval_s=1)
        with running_prometheus(binary, config, tmp_path / "prometheus") as prometheus:
            up = wait_for(prometheus, "count(up == 1) == 4", timeout_s=30)
            gateway = wait_for(
                prometheus, 'twinloop_requests_total{job="twinloop-gateway"}', timeout_s=10
            )
            trainer_series = wait_for(
                prometheus, '{job="twinloop-trainer", __name__=~"twinloop_.+"}', timeout_s=10
            )
            vllm = wait_for(
                prometheus,
                'count by (slot, __name__) ({job="vllm", __name__=~"vllm:.+"})',
                timeout_s=10,
            )
    finally:
        trainer.shutdown()
        trainer.server_close()
        thread.join(timeout=5)

    assert up[0]["value"][1] == "4"
    assert {s["metric"]["route"] for s in gateway} >= {"answer"}
    assert {s["metric"]["job"] for s in trainer_series} == {"twinloop-trainer"}
    # Both engines, told apart by the slot label deploy/prometheus.yml gives them, each with
    # the vLLM series the dashboards query.
    names = {
        slot: sorted(s["metric"]["__name__"] for s in vllm if s["metric"]["slot"] == slot)
        for slot in ("blue", "green")
    }
    for slot, found in names.items():
        assert set(found) >= VLLM_METRICS, (slot, found)
    # What the query API returned, for the test's log (pytest -rA shows it).
    print(f"up: {up[0]['value'][1]} targets; gateway: {[s['metric'] for s in gateway]}")
    print(f"trainer: {len(trainer_series)} twinloop_ series; vllm names by slot: {names}")
