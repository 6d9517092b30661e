"""stage_random_lora against a fake gateway: the bodies it sends and the errors it raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.staging import StagingError, stage_random_lora

ADMIN = {"Authorization": "Bearer token"}
ADAPTER = {
    "id": "ad1", "domain": "law", "name": "law-abc", "base_model": "base", "sha256": "ab" * 32,
    "parent_id": None, "training_run_id": None, "metrics": {}, "tainted": False,
    "created_at": "2025-01-01T00:00:00Z",
}  # fmt: skip


class FakeGateway:
    """Answers /adapters and /snapshots; `fail` maps a path to the error reply it gets."""

    def __init__(self, fail: dict[str, httpx.Response] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((request.url.path, body, dict(request.extensions["timeout"])))
        assert request.headers["authorization"] == ADMIN["Authorization"]
        if request.url.path in self.fail:
            return self.fail[request.url.path]
        if request.url.path == "/adapters":
            assert Path(body["path"], "adapter_config.json").is_file()  # still there
            return httpx.Response(201, json=ADAPTER)
        return httpx.Response(201, json={"id": "sn1", "adapters": body["adapters"]})

    def client(self) -> httpx.Client:
        transport = httpx.MockTransport(self.handle)
        return httpx.Client(transport=transport, base_url="http://gateway", headers=ADMIN)


def _fake_lora(made: list[dict[str, Any]]) -> Any:
    def make(base_dir: Path, out_dir: Path, *, seed: int, scaling: int) -> Path:
        made.append({"base_dir": base_dir, "out_dir": out_dir, "seed": seed, "scaling": scaling})
        return write_fake_adapter(out_dir, seed=seed)

    return make


def test_it_registers_the_lora_and_stages_a_snapshot_with_it() -> None:
    gateway, made = FakeGateway(), list[dict[str, Any]]()
    with gateway.client() as http:
        staged = stage_random_lora(
            http, Path("/models/base"), domain="law", seed=20, scaling=2, reason="canary",
            make=_fake_lora(made),
        )  # fmt: skip

    assert (staged.adapter_id, staged.snapshot_id) == ("ad1", "sn1")
    assert (staged.adapter.name, staged.adapter.sha256) == ("law-abc", "ab" * 32)
    [lora] = made
    assert (lora["base_dir"], lora["seed"], lora["scaling"]) == (Path("/models/base"), 20, 2)
    assert lora["out_dir"].name == "law"
    assert not lora["out_dir"].exists()  # the registry keeps its own copy
    [(path1, body1, timeout1), (path2, body2, timeout2)] = gateway.calls
    assert (path1, body1) == ("/adapters", {"path": str(lora["out_dir"]), "domain": "law"})
    assert (path2, body2) == ("/snapshots", {"adapters": {"law": "ad1"}, "reason": "canary"})
    assert timeout1["read"] == timeout2["read"] == 120.0


@pytest.mark.parametrize("path", ["/adapters", "/snapshots"])
def test_a_refused_call_raises_with_the_gateways_reply(path: str) -> None:
    reply = httpx.Response(409, json={"error": "ReleaseConflictError", "detail": "busy here"})
    gateway = FakeGateway(fail={path: reply})
    with gateway.client() as http, pytest.raises(StagingError) as raised:
        stage_random_lora(
            http, Path("/models/base"), domain="general", seed=7, scaling=8, reason="bench",
            make=_fake_lora([]),
        )  # fmt: skip

    assert f"POST {path} answered 409" in str(raised.value)
    assert "busy here" in str(raised.value)
    assert raised.value.response.status_code == 409
    assert [call[0] for call in gateway.calls][-1] == path
