"""Runs last (by name): stopping the shared engine must turn into clean 503s."""

from __future__ import annotations

import httpx
import pytest

from twinloop.engines.process import EngineProcesses
from twinloop.settings import Slot

pytestmark = pytest.mark.integration


def test_a_stopped_engine_gives_503(gateway_url: str, real_engine: EngineProcesses) -> None:
    assert real_engine.stop(Slot.BLUE) is True
    assert real_engine.record(Slot.BLUE) is None

    answer = httpx.post(f"{gateway_url}/answer", json={"question": "Hi"}, timeout=30)
    ready = httpx.get(f"{gateway_url}/readyz", timeout=30)

    assert answer.status_code == 503
    assert answer.json()["error"] == "EngineUnavailableError"
    assert ready.status_code == 503
