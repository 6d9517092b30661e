"""`twinloop trainer` as a real process: SIGKILL it mid-training, start it again, it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from twinloop.settings import Settings
from twinloop.testing.ports import free_port

pytestmark = pytest.mark.integration


def _trainer(settings: Settings, log: Path, *, steps: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update({
        "TWINLOOP_DATA_DIR": str(settings.data_dir),
        "TWINLOOP_DATABASE_URL": str(settings.database_url),
        "TWINLOOP_ENGINES__BLUE_PORT": str(settings.engines.blue_port),
        "TWINLOOP_ENGINES__GREEN_PORT": str(settings.engines.green_port),
        "TWINLOOP_TRAINER__SCHEDULE": "false",
        "TWINLOOP_TRAINER__POLL_S": "0.2",
        # One example is one step a pass: `steps` passes, and no budget cutting them short.
        "TWINLOOP_TRAINER__EPOCHS": str(steps),
        "TWINLOOP_TRAINER__STEP_BUDGET": str(steps),
        "TWINLOOP_TRAINER__METRICS_PORT": str(free_port()),
        # This test is about resuming training; QA after staging is the learning test's.
        "TWINLOOP_TRAINER__QA": "false",
    })  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "twinloop"), "trainer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _cycle(url: str, admin: dict[str, str], cycle_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/train/{cycle_id}", headers=admin, timeout=30).json()
    return body


def _status(url: str, admin: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/status", headers=admin, timeout=30).json()
    return body


def _wait(what: str, check: Any, timeout_s: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(
        f"{what} within {timeout_s:.0f} s; trainer log:\n{log.read_text()[-3000:]}"
    )


def test_a_trainer_killed_mid_training_resumes_the_cycle_when_started_again(
    two_engine_gateway: str, gateway_settings: Settings, tmp_path: Path
) -> None:
    url = two_engine_gateway
    admin = {"Authorization": f"Bearer {gateway_settings.admin_token.get_secret_value()}"}
    log = tmp_path / "trainer.log"
    served = httpx.post(
        f"{url}/answer",
        json={"question": "Who maintains Quorvath?", "domain": "general", "max_tokens": 8},
        timeout=120,
    ).json()
    item = {"type": "feedback", "id": "fb-kill", "answer_id": served["answer_id"],
            "rating": "down", "correction": "Quorvath is maintained by Ilsa Brenmark."}  # fmt: skip
    ingested = httpx.post(f"{url}/ingest", json={"items": [item]}, headers=admin, timeout=60)
    assert ingested.status_code == 202, ingested.text
    status = httpx.get(f"{url}/status", headers=admin, timeout=30).json()
    shadow_before = next(s for s in status["slots"] if s["role"] == "shadow")["snapshot_id"]
    cycle_id = httpx.post(f"{url}/train", headers=admin, timeout=30).json()["cycle_id"]

    first = _trainer(gateway_settings, log, steps=2000)
    try:
        _wait(
            "the trainer was not training",
            lambda: (
                (c := _cycle(url, admin, cycle_id))["state"] == "training"
                and c["progress"].get("step", 0) >= 2
            ),
            300,
            log,
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    killed = _cycle(url, admin, cycle_id)
    status = httpx.get(f"{url}/status", headers=admin, timeout=30).json()
    assert killed["state"] == "training"
    assert next(s for s in status["slots"] if s["role"] == "shadow")["snapshot_id"] == shadow_before

    second = _trainer(gateway_settings, log, steps=4)
    try:
        done = _wait(
            "the restarted trainer did not finish the cycle",
            lambda: (
                (c := _cycle(url, admin, cycle_id))["state"] in ("staged", "failed", "abandoned")
                and c
            ),
            300,
            log,
        )
        assert done["state"] == "staged", done
        assert done["attempts"] == 2
        # The gateway follows the trainer's release within its poll interval, not at once.
        shadow = _wait(
            "the gateway never served the cycle's snapshot on Shadow",
            lambda: next(
                (
                    s
                    for s in _status(url, admin)["slots"]
                    if s["role"] == "shadow" and s["snapshot_id"] == done["snapshot_id"]
                ),
                None,
            ),
            30,
            log,
        )
        assert shadow["adapters"] and not shadow["missing_adapters"]
        # SIGTERM stops it cleanly between cycles.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=30)
