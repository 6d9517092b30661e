"""Stage a random LoRA to Shadow through a running gateway's admin API.

What bench/swap.py, bench/canary.py and the real-engine canary tests all do first: make a
random LoRA for a domain, register it (`POST /adapters`), and stage a snapshot that serves
it (`POST /snapshots`). Public API only, so it works against any gateway, in-process or not.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from twinloop.registry.schemas import AdapterView
from twinloop.testing.adapters import make_random_lora

# Creating a snapshot stages it: Shadow's engine loads the adapter, which takes a while on CPU.
STAGE_TIMEOUT_S = 120.0


class LoraFactory(Protocol):
    """Writes a LoRA adapter folder for the model in `base_dir` to `out_dir`; `make_random_lora`."""

    def __call__(self, base_dir: Path, out_dir: Path, *, seed: int, scaling: int) -> Path: ...


class StagingError(RuntimeError):
    """An admin call answered other than 201; the message carries the gateway's reply."""

    def __init__(self, response: httpx.Response) -> None:
        request = response.request
        super().__init__(
            f"{request.method} {request.url.path} answered {response.status_code}: {response.text}"
        )
        self.response = response


@dataclass(frozen=True)
class StagedLora:
    """The registered adapter and the snapshot, now staged to Shadow, that serves it."""

    adapter_id: str
    snapshot_id: str
    adapter: AdapterView


def stage_random_lora(
    http: httpx.Client,
    base_dir: Path,
    *,
    domain: str,
    seed: int,
    scaling: int,
    reason: str,
    timeout_s: float = STAGE_TIMEOUT_S,
    make: LoraFactory = make_random_lora,
) -> StagedLora:
    """Make a random LoRA for `domain` on the model in `base_dir`, register it, stage it.

    `http` is a client for the gateway: `base_url` and the admin token's headers set. The
    adapter folder lives in a temporary directory only until it is registered (the registry
    keeps its own copy). Every other domain keeps the active snapshot's adapter. `timeout_s`
    applies to each call; staging waits for Shadow's engine to load the adapter. `make`
    replaces `make_random_lora` where no prepared base model exists (unit tests).
    """
    with tempfile.TemporaryDirectory(prefix="twinloop-lora-") as tmp:
        folder = make(base_dir, Path(tmp) / domain, seed=seed, scaling=scaling)
        registered = _created(http, "/adapters", {"path": str(folder), "domain": domain}, timeout_s)
    adapter = AdapterView.model_validate(registered)
    snapshot = _created(
        http, "/snapshots", {"adapters": {domain: adapter.id}, "reason": reason}, timeout_s
    )
    return StagedLora(adapter_id=adapter.id, snapshot_id=str(snapshot["id"]), adapter=adapter)


def _created(http: httpx.Client, path: str, body: dict[str, Any], timeout_s: float) -> Any:
    response = http.post(path, json=body, timeout=timeout_s)
    if response.status_code != 201:
        raise StagingError(response)
    return response.json()
