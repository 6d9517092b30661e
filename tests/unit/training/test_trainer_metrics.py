"""The trainer's own /metrics: its families, and the release changes its stages cause."""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.request

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_HEADERS
from tests.unit.conftest import run_cycle
from twinloop.trainer import daemon
from twinloop.trainer.daemon import Trainer


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics from the trainer's server: each sample's value by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_the_trainers_metrics_show_the_shadow_changes_its_stages_make(
    client: httpx.AsyncClient, admin_headers: dict[str, str], trainer: Trainer
) -> None:
    example = {"type": "example", "id": "e1", "domain": "law",
               "question": "What is a tort?", "answer": "A civil wrong."}  # fmt: skip
    ingested = await client.post("/ingest", json={"items": [example]}, headers=ADMIN_HEADERS)
    assert ingested.status_code == 202, ingested.text
    cycle = await run_cycle(client, admin_headers, trainer)
    assert cycle["state"] == "staged", cycle
    # Its own port, taken from the system: the server runs in this process, in a thread.
    cfg = trainer.settings.trainer.model_copy(update={"metrics_port": 0})
    served = dataclasses.replace(
        trainer, settings=trainer.settings.model_copy(update={"trainer": cfg})
    )
    with daemon.serving_metrics(served) as port:
        samples = await asyncio.to_thread(_scrape, port)

    # The one Shadow change the cycle made (its stage step, through change_shadow).
    assert samples[("twinloop_shadow_changes_total", (("outcome", "staged"),))] == 1.0
    assert samples[("twinloop_release_change_seconds_count", (("kind", "stage"),))] == 1.0
    assert samples[("twinloop_training_cycles_total", (("outcome", "staged"),))] == 1.0
    # Not the gateway's other families, nor the release in force: the gateways export those.
    names = {name for name, _ in samples}
    assert not {"twinloop_requests_total", "twinloop_active_slot"} & names
    assert "twinloop_release_generation" not in names
